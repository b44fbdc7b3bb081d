// Package keyscli is the "gateway keys" subcommand: create, list and revoke
// API keys in the gateway's database. The program's dispatcher opens the
// key store (after the document store's migrations, which create its
// table) and calls Run with the arguments after "keys".
package keyscli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/morphik-org/colpali-gateway/auth"
	"github.com/morphik-org/colpali-gateway/auth/apikey"
)

// Keys is what the subcommand needs of the key store; *apikey.Store is one.
type Keys interface {
	Create(ctx context.Context, tenant string, scopes []auth.Scope, ttl time.Duration) (string, apikey.Record, error)
	List(ctx context.Context, tenant string) ([]apikey.Record, error)
	Revoke(ctx context.Context, ref, tenant string) (apikey.Record, error)
}

var _ Keys = (*apikey.Store)(nil)

// DefaultScopes are a new key's scopes when -scopes is not given: a
// client's, not an administrator's.
var DefaultScopes = []auth.Scope{auth.ScopeEmbed, auth.ScopeDocumentsRead, auth.ScopeDocumentsWrite}

const usage = `usage: gateway keys <command> [flags]

commands:
  create -tenant T [-scopes embed,documents:read,...] [-expires 720h] [-quiet]
         make a key and print it once
  list   [-tenant T]
         list keys (prefix, tenant, scopes, dates, status); never secrets
  revoke [-tenant T] PREFIX|cpk_PREFIX|ID
         revoke a key; gateways stop accepting it within their cache TTL (30s)

scopes: embed, documents:read, documents:write, admin
`

// ErrUsage: the arguments were wrong; usage has been printed to stderr.
var ErrUsage = errors.New("keys: bad usage")

// Run runs one keys command. stdout gets the results (the key, the
// table); stderr gets usage and warnings.
func Run(ctx context.Context, args []string, stdout, stderr io.Writer, keys Keys) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return ErrUsage
	}
	switch args[0] {
	case "create":
		return create(ctx, args[1:], stdout, stderr, keys)
	case "list":
		return list(ctx, args[1:], stdout, stderr, keys)
	case "revoke":
		return revoke(ctx, args[1:], stdout, stderr, keys)
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	fmt.Fprintf(stderr, "keys: unknown command %q\n%s", args[0], usage)
	return ErrUsage
}

func flags(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("gateway keys "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs
}

func parse(fs *flag.FlagSet, args []string, positional int) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return fmt.Errorf("%w: %w", ErrUsage, err)
	}
	if fs.NArg() != positional {
		return fmt.Errorf("%w: %s: want %d argument(s), got %q", ErrUsage, fs.Name(), positional, fs.Args())
	}
	return nil
}

func create(ctx context.Context, args []string, stdout, stderr io.Writer, keys Keys) error {
	fs := flags("create", stderr)
	tenant := fs.String("tenant", "", "tenant the key acts for (required)")
	scopeList := fs.String("scopes", joinScopes(DefaultScopes), "comma-separated scopes")
	expires := fs.Duration("expires", 0, "lifetime, such as 720h; 0 for never")
	quiet := fs.Bool("quiet", false, "print only the key (for scripts)")
	if err := parse(fs, args, 0); err != nil {
		return err
	}
	var errs []error
	if *tenant == "" {
		errs = append(errs, errors.New("-tenant: required"))
	}
	scopes, err := auth.ParseScopes(*scopeList)
	if err != nil {
		errs = append(errs, fmt.Errorf("-scopes: %w", err))
	} else if len(scopes) == 0 {
		errs = append(errs, fmt.Errorf("-scopes: want at least one of %v", auth.AllScopes))
	}
	if *expires < 0 {
		errs = append(errs, fmt.Errorf("-expires %v: must be positive, or 0 for never", *expires))
	}
	if len(errs) > 0 {
		return fmt.Errorf("%w: %w", ErrUsage, errors.Join(errs...))
	}
	plain, rec, err := keys.Create(ctx, *tenant, scopes, *expires)
	if err != nil {
		return fmt.Errorf("keys create: %w", err)
	}
	if *quiet {
		_, err = fmt.Fprintln(stdout, plain)
		return err
	}
	fmt.Fprintf(stderr, "Created API key %s (id %d) for tenant %q, scopes %s, expires %s.\n",
		rec.Display(), rec.ID, rec.Tenant, joinScopes(rec.Scopes), when(rec.ExpiresAt, "never"))
	fmt.Fprintln(stderr, "Store it now: it will not be shown again (the gateway keeps only its hash).")
	_, err = fmt.Fprintln(stdout, plain)
	return err
}

func list(ctx context.Context, args []string, stdout, stderr io.Writer, keys Keys) error {
	fs := flags("list", stderr)
	tenant := fs.String("tenant", "", "only this tenant's keys (default: every tenant)")
	if err := parse(fs, args, 0); err != nil {
		return err
	}
	recs, err := keys.List(ctx, *tenant)
	if err != nil {
		return fmt.Errorf("keys list: %w", err)
	}
	now := time.Now()
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "KEY\tID\tTENANT\tSCOPES\tCREATED\tEXPIRES\tLAST USED\tSTATUS")
	for _, r := range recs {
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s\n", r.Display(), r.ID, r.Tenant, joinScopes(r.Scopes),
			when(r.CreatedAt, "-"), when(r.ExpiresAt, "never"), when(r.LastUsedAt, "never"), status(r, now))
	}
	return tw.Flush()
}

func revoke(ctx context.Context, args []string, stdout, stderr io.Writer, keys Keys) error {
	fs := flags("revoke", stderr)
	tenant := fs.String("tenant", "", "refuse unless the key belongs to this tenant")
	if err := parse(fs, args, 1); err != nil {
		return err
	}
	rec, err := keys.Revoke(ctx, fs.Arg(0), *tenant)
	if err != nil {
		return fmt.Errorf("keys revoke: %w", err)
	}
	_, err = fmt.Fprintf(stdout, "Revoked %s (id %d, tenant %q) at %s; gateways refuse it within their cache TTL.\n",
		rec.Display(), rec.ID, rec.Tenant, when(rec.RevokedAt, "-"))
	return err
}

func joinScopes(s []auth.Scope) string {
	names := make([]string, len(s))
	for i, sc := range s {
		names[i] = string(sc)
	}
	return strings.Join(names, ",")
}

func when(t time.Time, zero string) string {
	if t.IsZero() {
		return zero
	}
	return t.UTC().Format(time.RFC3339)
}

func status(r apikey.Record, now time.Time) string {
	switch {
	case !r.RevokedAt.IsZero():
		return "revoked"
	case !r.ExpiresAt.IsZero() && !now.Before(r.ExpiresAt):
		return "expired"
	}
	return "active"
}

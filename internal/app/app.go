// Package app is the gateway command as a library: Main parses the command
// line and the environment, validates everything at once, and runs the
// gateway or one of its subcommands. cmd/gateway is signals plus one call
// to Main, so that tests run the whole command in-process.
//
// Every flag can also be set by an environment variable: COLPALI_ and the
// flag's name in upper case with underscores (-triton-addrs is
// COLPALI_TRITON_ADDRS). A flag given on the command line wins. The database
// URL is also read from DATABASE_URL, Postgres' usual variable.
//
// Documents are stored in Postgres with pgvector: -database-url, or else an
// embedded Postgres (PGlite, under node) keeping its data in -data-dir.
// `gateway migrate [flags]` applies the database migrations and exits; the
// gateway also applies them at start-up.
//
// Access (access.go): -auth chooses the credentials accepted, API keys
// (the default; kept in the same database, managed by `gateway keys
// create|list|revoke`, keys.go), JWTs (-jwt-*), both, or none (loopback
// listen addresses only, which are then the default); -quota-* set each
// tenant's limits.
//
// # Configuration
//
// Each component validates its own Config and names a bad field by its Go
// name (package internal/config); this package only binds flags to fields
// and renames the fields to flags when it reports, all findings at once.
// Every numeric flag defaults to its field's default, so an explicit zero
// or negative value is refused by name ("-max-queries 0: must be
// positive"); an unset flag means the default. -max-recv-msg-size has no
// fixed default: unset, it derives from -max-images and -max-image-bytes.
package app

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/morphik-org/colpali-gateway/internal/bulkingest"
)

// Version is the gateway's version, set at build time with -ldflags
// "-X github.com/morphik-org/colpali-gateway/internal/app.Version=...".
var Version = "dev"

// envPrefix starts the environment variable of every flag.
const envPrefix = "COLPALI_"

// A subcommand is `gateway NAME [flags]`. Serving is the command without a
// name.
type subcommand struct {
	name, summary string
	run           func(ctx context.Context, args []string, stderr io.Writer, getenv func(string) string) error
}

// subcommands are the gateway's subcommands, in the order usage lists them.
var subcommands = []subcommand{
	{"migrate", "apply the database migrations and exit", migrate},
	{"keys", "create, list or revoke API keys: keys create -tenant T", keys},
	{"ingest", "ingest a folder of page images through a running gateway", ingestFolder},
}

// ingestFolder is `gateway ingest`: a client of a running gateway (see
// package bulkingest); its summary goes to stdout.
func ingestFolder(ctx context.Context, args []string, stderr io.Writer, getenv func(string) string) error {
	return bulkingest.Run(ctx, args, os.Stdout, stderr, getenv)
}

// Main runs the gateway command: args are the arguments after the program
// name, getenv reads the environment (os.Getenv in production), and logs
// and usage go to stderr. It serves until ctx ends and returns why it
// stopped; with -help it prints usage and returns flag.ErrHelp.
func Main(ctx context.Context, args []string, stderr io.Writer, getenv func(string) string) error {
	if len(args) > 0 && args[0] != "" && !strings.HasPrefix(args[0], "-") {
		for _, c := range subcommands {
			if args[0] == c.name {
				return c.run(ctx, args[1:], stderr, getenv)
			}
		}
		var names []string
		for _, c := range subcommands {
			names = append(names, c.name)
		}
		return fmt.Errorf("unknown command %q: want one of %s, or flags only to serve", args[0], strings.Join(names, ", "))
	}
	return serve(ctx, args, stderr, getenv)
}

// usageHead is the top of `gateway -help`.
func usageHead() string {
	s := "Usage: gateway [flags]\n"
	for _, c := range subcommands {
		s += fmt.Sprintf("       gateway %s [flags]   (%s)\n", c.name, c.summary)
	}
	return s + "\ncolpali-gateway serves the colpali.v1 API (gRPC and REST/JSON) in front of\n" +
		"Triton servers running ColPali. Every flag may also be set by the environment\n" +
		"variable " + envPrefix + "NAME, NAME being the flag in upper case with underscores.\n\nFlags:\n"
}

// isHelp reports whether err is the flag package's answer to -help.
func isHelp(err error) bool { return errors.Is(err, flag.ErrHelp) }

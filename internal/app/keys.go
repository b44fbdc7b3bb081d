package app

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"

	"github.com/morphik-org/colpali-gateway/auth/apikey"
	"github.com/morphik-org/colpali-gateway/auth/keyscli"
	"github.com/morphik-org/colpali-gateway/internal/cli"
)

// keysCommands are the words that start a keys command: the flags before
// one choose the database, the arguments from it on are keyscli's.
var keysCommands = []string{"create", "list", "revoke", "help"}

// keys is `gateway keys [database flags] create|list|revoke ...`: manage
// the API keys in the database the flags name (the same flags and
// variables as the gateway's), after applying the migrations that create
// their table. Keys are printed on standard output, once.
func keys(ctx context.Context, args []string, stderr io.Writer, getenv func(string) string) error {
	return runKeys(ctx, args, os.Stdout, stderr, getenv)
}

func runKeys(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) error {
	var d dbFlags
	var logFlags cli.LogFlags
	fs := flag.NewFlagSet("gateway keys", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: gateway keys [flags] create|list|revoke ...\n\n"+
			"Manages the API keys of the gateways that share this database (see\n"+
			"`gateway keys help`). The flags choose the database as the gateway's do; with\n"+
			"the embedded Postgres (no -database-url), stop the gateway that uses the same\n"+
			"-data-dir first: the embedded Postgres serves one process at a time.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	d.register(fs)
	logFlags.Register(fs)
	timeout := fs.Duration("timeout", defaultMigrateTimeout, "how long the command may take")
	cmd := slices.IndexFunc(args, func(a string) bool { return slices.Contains(keysCommands, a) })
	if cmd < 0 {
		cmd = len(args)
	}
	err := cli.Parse(fs, args[:cmd], envPrefix, getenv)
	if isHelp(err) {
		return err
	}
	d.resolve(getenv)
	errs := []error{err, logFlags.Validate()}
	if *timeout <= 0 {
		errs = append(errs, fmt.Errorf("-timeout %v: must be positive", *timeout))
	}
	if cmd == len(args) {
		errs = append(errs, fmt.Errorf("keys: want a command: create, list or revoke (gateway keys help)"))
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	if args[cmd] == "help" {
		return keyscli.Run(ctx, args[cmd:], stdout, stderr, nil)
	}
	logger, err := logFlags.Logger(stderr)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	st, closeDB, err := openMigrated(ctx, d, logger)
	if err != nil {
		return fmt.Errorf("keys: %w", err)
	}
	defer closeDB()
	url, schema := st.Database()
	ks, err := apikey.Open(ctx, apikey.Config{URL: url, Schema: schema}, nil, logger)
	if err != nil {
		return err
	}
	defer ks.Close()
	return keyscli.Run(ctx, args[cmd:], stdout, stderr, ks)
}

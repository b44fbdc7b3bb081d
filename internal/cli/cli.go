// Package cli holds what the binaries share on their command line: flags
// that also read COLPALI_* environment variables, and the slog set-up.
package cli

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"strings"
)

// EnvName is the environment variable that sets flag name: prefix plus the
// name in upper case with dashes as underscores ("grpc-addr" with prefix
// "COLPALI_" is COLPALI_GRPC_ADDR).
func EnvName(prefix, name string) string {
	return prefix + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
}

// Parse sets every flag of fs from its environment variable (via getenv),
// then from args, so a flag on the command line wins over the environment.
// Every bad value, from either source, is reported at once.
func Parse(fs *flag.FlagSet, args []string, envPrefix string, getenv func(string) string) error {
	var errs []error
	if envPrefix != "" {
		fs.VisitAll(func(f *flag.Flag) {
			env := EnvName(envPrefix, f.Name)
			if v := getenv(env); v != "" {
				if err := fs.Set(f.Name, v); err != nil {
					errs = append(errs, fmt.Errorf("environment %s=%q: %w", env, v, err))
				}
			}
		})
	}
	// The flag package prints each error with the whole usage text; we
	// report the errors ourselves and print usage only for -help.
	out := fs.Output()
	fs.SetOutput(io.Discard)
	defer fs.SetOutput(out)
	// The flag package stops at the first bad flag; to report them all,
	// parse again from just past each failure.
	for {
		err := fs.Parse(args)
		if errors.Is(err, flag.ErrHelp) {
			fs.SetOutput(out)
			fs.Usage()
			return err
		}
		if err == nil {
			break
		}
		errs = append(errs, err)
		next := skipPast(fs, args, err)
		if next >= len(args) {
			break
		}
		args = args[next:]
	}
	if fs.NArg() > 0 && len(errs) == 0 {
		errs = append(errs, fmt.Errorf("unexpected arguments: %q", fs.Args()))
	}
	return errors.Join(errs...)
}

// skipPast finds the argument that caused err (the flag package names it in
// the error text) and returns the index just after it and its value.
func skipPast(fs *flag.FlagSet, args []string, err error) int {
	msg := err.Error()
	for i, a := range args {
		if !strings.HasPrefix(a, "-") {
			continue
		}
		name, _, hasValue := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if name == "" || !(strings.Contains(msg, "-"+name+":") || strings.HasSuffix(msg, "-"+name)) {
			continue
		}
		next := i + 1
		if f := fs.Lookup(name); f != nil && !hasValue && !isBool(f) {
			next++ // "-name value": the value is the next argument
		}
		return next
	}
	return len(args)
}

func isBool(f *flag.Flag) bool {
	b, ok := f.Value.(interface{ IsBoolFlag() bool })
	return ok && b.IsBoolFlag()
}

// LogFlags are the logging flags every binary has.
type LogFlags struct {
	Format string
	Level  string
}

// Register adds -log-format and -log-level to fs.
func (l *LogFlags) Register(fs *flag.FlagSet) {
	fs.StringVar(&l.Format, "log-format", "text", "log format: text or json")
	fs.StringVar(&l.Level, "log-level", "info", "log level: debug, info, warn or error")
}

// Validate names both logging flags when they are bad.
func (l LogFlags) Validate() error {
	var errs []error
	var level slog.Level
	if err := level.UnmarshalText([]byte(l.Level)); err != nil {
		errs = append(errs, fmt.Errorf("-log-level %q: want debug, info, warn or error", l.Level))
	}
	if l.Format != "text" && l.Format != "json" {
		errs = append(errs, fmt.Errorf("-log-format %q: want text or json", l.Format))
	}
	return errors.Join(errs...)
}

// Logger builds the logger the flags describe, writing to w.
func (l LogFlags) Logger(w io.Writer) (*slog.Logger, error) {
	if err := l.Validate(); err != nil {
		return nil, err
	}
	var level slog.Level
	_ = level.UnmarshalText([]byte(l.Level)) // checked by Validate
	opts := &slog.HandlerOptions{Level: level}
	if l.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return slog.New(slog.NewTextHandler(w, opts)), nil
}

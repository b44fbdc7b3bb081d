// Command tritonsim is a simulator of NVIDIA Triton Inference Server serving
// the ColPali query and image models, for development and tests: it speaks
// Triton's gRPC protocol and metrics but runs no model. It is not Triton.
// See package internal/tritonsim.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/morphik-org/colpali-gateway/internal/tlsreload"
	"github.com/morphik-org/colpali-gateway/internal/tritonsim"
)

// gracePeriod bounds the graceful stop on a signal: a call queued behind a
// long simulated batch must not keep the process alive for minutes.
const gracePeriod = 10 * time.Second

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "tritonsim:", err)
		os.Exit(1)
	}
}

// run parses args, runs the simulator until ctx is done (then stops it
// gracefully) or until a -stop-after crash, and writes logs to stderr.
func run(ctx context.Context, args []string, stderr io.Writer) error {
	opts, err := parseFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	if err != nil {
		return err
	}
	logger, err := opts.log.Logger(stderr)
	if err != nil {
		return err
	}

	if opts.tls.CertFile != "" || opts.tls.KeyFile != "" || opts.tls.CAFile != "" {
		if opts.tls.CertFile == "" {
			return errors.New("-tls-cert-file and -tls-key-file are needed for TLS")
		}
		r, err := tlsreload.New(opts.tls, tlsreload.Deps{Logger: logger})
		if err != nil {
			return err
		}
		go r.Run(ctx)
		opts.cfg.TLS = r.ServerConfig("h2")
	}
	s, err := tritonsim.Start(ctx, opts.cfg, logger)
	if err != nil {
		return err
	}
	select {
	case <-s.Done():
		return fmt.Errorf("crashed on purpose after %d ModelInfer calls (-stop-after)", opts.cfg.StopAfter)
	case <-ctx.Done():
	}

	logger.Info("tritonsim stopping gracefully", "grace_period", gracePeriod.String())
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		s.GracefulStop()
	}()
	timer := time.NewTimer(gracePeriod)
	defer timer.Stop()
	select {
	case <-stopped:
	case <-timer.C:
		logger.Warn("tritonsim calls still in flight after the grace period; stopping hard")
		s.Stop()
		<-stopped
	}
	return nil
}

package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/morphik-org/colpali-gateway/gateway"
	"github.com/morphik-org/colpali-gateway/internal/tlsreload"
)

// transportFlags are the TLS flags: the gateway's listeners and its
// connections to Triton.
type transportFlags struct {
	server tlsreload.Config // -tls-*: the gateway's own listeners
	triton tlsreload.Config // -triton-*-file: the connections to Triton
	// tritonTLS turns TLS on towards Triton; the files are optional (the
	// system roots verify the backends without -triton-ca-file).
	tritonTLS        bool
	tritonServerName string
}

// registerTransportFlags registers the TLS flags, the admin listener's and
// the image checks' (gateway Config fields, bound by name for Validate).
func registerTransportFlags(b binder, o *options) {
	fs, t := b.fs, &o.transport
	g, gb := &o.gateway, b.with(gatewayFields)
	gb.string(&g.AdminAddr, "admin-addr", "AdminAddr", "admin listener: /metrics, /debug/pprof/, gRPC reflection and BackendService (keep it on loopback, or behind TLS and a firewall)")
	gb.int(&g.MaxConcurrentDecodes, "max-concurrent-decodes", "MaxConcurrentDecodes", "most images whose data is checked at once, across all calls (default GOMAXPROCS)")
	gb.int(&g.MaxCallPixels, "max-call-pixels", "MaxCallPixels", "most pixels of all the images of one call together")

	fs.StringVar(&t.server.CertFile, "tls-cert-file", "", "PEM certificate chain `file` of the gRPC, HTTP and admin listeners (with -tls-key-file); re-read when it changes; empty: clear text")
	fs.StringVar(&t.server.KeyFile, "tls-key-file", "", "PEM private key `file` of -tls-cert-file")
	fs.StringVar(&t.server.CAFile, "tls-client-ca-file", "", "PEM CA bundle `file`: require client certificates it signed (mutual TLS) on every listener")
	fs.DurationVar(&t.server.Interval, "tls-reload-interval", tlsreload.DefaultInterval, "how often the TLS files (-tls-* and -triton-*-file) are checked for a change")
	fs.BoolVar(&t.tritonTLS, "triton-tls", false, "connect to the Triton backends with TLS (Triton's --grpc-use-ssl); implied by the other -triton-*-file flags")
	fs.StringVar(&t.triton.CAFile, "triton-ca-file", "", "PEM CA bundle `file` that signs the backends' certificates (default: the system roots)")
	fs.StringVar(&t.triton.CertFile, "triton-cert-file", "", "PEM client certificate `file` for mutual TLS to the backends (Triton's --grpc-use-ssl-mutual), with -triton-key-file")
	fs.StringVar(&t.triton.KeyFile, "triton-key-file", "", "PEM private key `file` of -triton-cert-file")
	fs.StringVar(&t.tritonServerName, "triton-server-name", "", "name the backends' certificates must carry (default: the host of each backend address)")
}

// validate names every bad TLS flag.
func (t *transportFlags) validate() error {
	var errs []error
	if (t.server.CertFile == "") != (t.server.KeyFile == "") {
		errs = append(errs, errors.New("-tls-cert-file and -tls-key-file go together: give both or neither"))
	}
	if t.server.CAFile != "" && t.server.CertFile == "" {
		errs = append(errs, errors.New("-tls-client-ca-file needs -tls-cert-file and -tls-key-file: mutual TLS is TLS first"))
	}
	if (t.triton.CertFile == "") != (t.triton.KeyFile == "") {
		errs = append(errs, errors.New("-triton-cert-file and -triton-key-file go together: give both or neither"))
	}
	if t.server.Interval <= 0 {
		errs = append(errs, fmt.Errorf("-tls-reload-interval %v: must be positive", t.server.Interval))
	}
	return errors.Join(errs...)
}

// apply loads the TLS files and puts them into o: the gateway's listeners'
// TLS is returned (nil: clear text), Triton's goes into the router's
// connection template. run follows the files' changes until its context
// ends.
func (t *transportFlags) apply(o *options, logger *slog.Logger) (listeners gateway.TLS, run func(context.Context), err error) {
	var reloaders []*tlsreload.Reloader
	deps := tlsreload.Deps{Logger: logger.With("component", "tls")}
	if t.server.CertFile != "" {
		r, err := tlsreload.New(t.server, deps)
		if err != nil {
			return nil, nil, err
		}
		reloaders = append(reloaders, r)
		listeners = r
	}
	if t.tritonTLS || t.triton.CAFile != "" || t.triton.CertFile != "" || t.tritonServerName != "" {
		cfg := t.triton
		cfg.Interval = t.server.Interval
		r, err := tlsreload.New(cfg, tlsreload.Deps{Logger: logger.With("component", "triton_tls")})
		if err != nil {
			return nil, nil, err
		}
		reloaders = append(reloaders, r)
		o.router.Triton.TLS = r.ClientConfig(t.tritonServerName)
	}
	run = func(ctx context.Context) {
		done := make(chan struct{}, len(reloaders))
		for _, r := range reloaders {
			go func() { r.Run(ctx); done <- struct{}{} }()
		}
		for range reloaders {
			<-done
		}
	}
	return listeners, run, nil
}

// tlsLogged is what the start-up log says of TLS.
func (t *transportFlags) tlsLogged() []any {
	mode := "off"
	switch {
	case t.server.CAFile != "":
		mode = "mutual"
	case t.server.CertFile != "":
		mode = "on"
	}
	return []any{"tls", mode, "triton_tls", t.tritonTLS || t.triton.CAFile != "" || t.triton.CertFile != ""}
}

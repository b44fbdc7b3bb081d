// Package tlsreload serves a certificate and key pair (and, for mutual TLS,
// a CA bundle) from files that may be replaced while the process runs:
// cert-manager, Vault agents and the like rotate them in place, and a
// restart to pick them up would drop every connection.
//
// A Reloader polls the files' modification times and sizes on an interval
// (internal/clock, so tests drive it) and re-reads them when either
// changes. New handshakes get the new pair at once, through
// tls.Config.GetCertificate (server side), GetClientCertificate (client
// side) and GetConfigForClient (the client CA bundle); connections already
// established keep the certificate they were made with. A bad read (a
// half-written file, a key that does not match, an unparsable bundle)
// keeps the last good pair and is logged; the next change is tried again.
// Polling rather than inotify: it costs a few stat calls a second, needs no
// dependency, and sees Kubernetes' symlink swaps of mounted secrets, which
// a watch on the file itself misses.
package tlsreload

import (
	"cmp"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/morphik-org/colpali-gateway/internal/clock"
	"github.com/morphik-org/colpali-gateway/internal/config"
	"github.com/morphik-org/colpali-gateway/internal/errclass"
)

// DefaultInterval is how often the files are checked for a change.
const DefaultInterval = 10 * time.Second

// Config names the files. In a Config built in Go a zero Interval takes its
// default.
type Config struct {
	// CertFile and KeyFile hold the PEM certificate chain and its private
	// key. Both or neither: without them a Reloader serves no certificate
	// (a client that only verifies its server).
	CertFile, KeyFile string
	// CAFile is a PEM bundle of CA certificates, optional: on a server the
	// CAs that sign client certificates (mutual TLS), on a client the CAs
	// that sign the server's (the system roots otherwise).
	CAFile string
	// Interval is how often the files are checked. Default 10s.
	Interval time.Duration
}

// Validate names every bad field of c.
func (c Config) Validate() error {
	var errs config.Errors
	if (c.CertFile == "") != (c.KeyFile == "") {
		errs.Bad("CertFile", c.CertFile, "and {KeyFile} (%q) go together: give both or neither", c.KeyFile)
	}
	errs.Add(config.Positive("Interval", c.Interval))
	return errs.Err()
}

// Deps are a Reloader's collaborators.
type Deps struct {
	// Logger receives the reloads and the failed reads. Default: discard.
	Logger *slog.Logger
	// Clock paces the checks. Default: the system clock.
	Clock clock.Clock
}

// Reloader holds the current certificate pair and CA pool and replaces them
// when their files change. Its methods are safe for concurrent use.
type Reloader struct {
	cfg  Config
	deps Deps

	cert atomic.Pointer[tls.Certificate]
	pool atomic.Pointer[x509.CertPool]

	mu    sync.Mutex // serialises Check
	stamp map[string]fileStamp
}

// fileStamp is what Check compares to tell that a file changed.
type fileStamp struct {
	mod  time.Time
	size int64
}

// New reads the files once: a Reloader starts with a good pair or not at
// all. Call Run to follow changes.
func New(cfg Config, deps Deps) (*Reloader, error) {
	cfg.Interval = cmp.Or(cfg.Interval, DefaultInterval)
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if deps.Logger == nil {
		deps.Logger = slog.New(slog.DiscardHandler)
	}
	if deps.Clock == nil {
		deps.Clock = clock.System{}
	}
	r := &Reloader{cfg: cfg, deps: deps, stamp: map[string]fileStamp{}}
	if err := r.load(); err != nil {
		return nil, err
	}
	return r, nil
}

// Run checks the files every Config.Interval until ctx ends.
func (r *Reloader) Run(ctx context.Context) {
	t := r.deps.Clock.NewTimer()
	defer t.Stop()
	for {
		t.Reset(r.cfg.Interval)
		select {
		case <-ctx.Done():
			return
		case <-t.C():
			r.Check()
		}
	}
}

// Check re-reads the files if any changed since the last read, and reports
// whether the certificate or pool was replaced. A failed read keeps the
// last good ones and is logged.
func (r *Reloader) Check() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	changed := false
	for _, f := range r.files() {
		st, err := stampOf(f)
		if err != nil || st != r.stamp[f] {
			changed = true
			break
		}
	}
	if !changed {
		return false
	}
	if err := r.load(); err != nil {
		r.deps.Logger.Error("TLS files changed but cannot be loaded; keeping the previous ones", "error", err.Error())
		return false
	}
	r.deps.Logger.Info("TLS files reloaded", "cert_file", r.cfg.CertFile, "ca_file", r.cfg.CAFile, "not_after", r.notAfter())
	return true
}

func (r *Reloader) files() []string {
	var fs []string
	for _, f := range []string{r.cfg.CertFile, r.cfg.KeyFile, r.cfg.CAFile} {
		if f != "" {
			fs = append(fs, f)
		}
	}
	return fs
}

func stampOf(name string) (fileStamp, error) {
	fi, err := os.Stat(name)
	if err != nil {
		return fileStamp{}, err
	}
	return fileStamp{mod: fi.ModTime(), size: fi.Size()}, nil
}

// load reads every file and, only if all are good, publishes them. The
// stamps are taken before the reads: a file replaced during the read looks
// changed at the next Check and is read again.
func (r *Reloader) load() error {
	stamps := map[string]fileStamp{}
	for _, f := range r.files() {
		st, err := stampOf(f)
		if err != nil {
			return errclass.Wrap(errclass.Invalid, fmt.Errorf("tls: %w", err))
		}
		stamps[f] = st
	}
	var cert *tls.Certificate
	if r.cfg.CertFile != "" {
		c, err := tls.LoadX509KeyPair(r.cfg.CertFile, r.cfg.KeyFile)
		if err != nil {
			return errclass.Wrap(errclass.Invalid, fmt.Errorf("tls: certificate %s and key %s: %w", r.cfg.CertFile, r.cfg.KeyFile, err))
		}
		cert = &c
	}
	var pool *x509.CertPool
	if r.cfg.CAFile != "" {
		pem, err := os.ReadFile(r.cfg.CAFile)
		if err != nil {
			return errclass.Wrap(errclass.Invalid, fmt.Errorf("tls: CA bundle: %w", err))
		}
		pool = x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return errclass.Wrap(errclass.Invalid, fmt.Errorf("tls: CA bundle %s holds no PEM certificate", r.cfg.CAFile))
		}
	}
	if cert != nil {
		r.cert.Store(cert)
	}
	if pool != nil {
		r.pool.Store(pool)
	}
	r.stamp = stamps
	return nil
}

func (r *Reloader) notAfter() time.Time {
	if c := r.cert.Load(); c != nil && c.Leaf != nil {
		return c.Leaf.NotAfter
	}
	return time.Time{}
}

// ErrNoCertificate is returned to a handshake when no certificate files
// were configured.
var ErrNoCertificate = errors.New("tls: no certificate configured")

// Certificate is the current pair, or nil without one.
func (r *Reloader) Certificate() *tls.Certificate { return r.cert.Load() }

// GetCertificate is tls.Config.GetCertificate.
func (r *Reloader) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	if c := r.cert.Load(); c != nil {
		return c, nil
	}
	return nil, ErrNoCertificate
}

// GetClientCertificate is tls.Config.GetClientCertificate. Without a pair
// it sends none (an empty certificate, as crypto/tls expects), and the
// server decides.
func (r *Reloader) GetClientCertificate(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
	if c := r.cert.Load(); c != nil {
		return c, nil
	}
	return &tls.Certificate{}, nil
}

// ServerConfig is a server's tls.Config: TLS 1.2 at least (crypto/tls
// prefers 1.3 whenever the client offers it), the current certificate on
// every handshake, and, with a CAFile, client certificates required and
// verified against the current bundle. nextProtos are the ALPN protocols
// ("h2" for gRPC; "h2", "http/1.1" for HTTP).
func (r *Reloader) ServerConfig(nextProtos ...string) *tls.Config {
	base := &tls.Config{
		MinVersion:     tls.VersionTLS12,
		GetCertificate: r.GetCertificate,
		NextProtos:     nextProtos,
	}
	if r.cfg.CAFile == "" {
		return base
	}
	// GetConfigForClient runs on every handshake, so a rotated CA bundle
	// applies to the next connection.
	base.GetConfigForClient = func(*tls.ClientHelloInfo) (*tls.Config, error) {
		c := base.Clone()
		c.GetConfigForClient = nil
		c.ClientAuth = tls.RequireAndVerifyClientCert
		c.ClientCAs = r.pool.Load()
		return c, nil
	}
	return base
}

// ClientConfig is a client's tls.Config: TLS 1.2 at least, serverName
// verified (empty: the dialled host), the server's chain verified against
// the current CA bundle (the system roots without a CAFile), and the
// current certificate sent when the server asks for one.
func (r *Reloader) ClientConfig(serverName string) *tls.Config {
	c := &tls.Config{
		MinVersion:           tls.VersionTLS12,
		ServerName:           serverName,
		GetClientCertificate: r.GetClientCertificate,
	}
	if r.cfg.CAFile == "" {
		return c
	}
	// RootCAs is read once per tls.Config; to follow a rotated bundle the
	// chain is verified here against the current pool instead.
	c.InsecureSkipVerify = true // #nosec G402 -- verified in VerifyConnection below, against the current pool
	c.VerifyConnection = func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) == 0 {
			return errors.New("tls: server sent no certificate")
		}
		opts := x509.VerifyOptions{
			DNSName:       cmp.Or(serverName, cs.ServerName),
			Roots:         r.pool.Load(),
			Intermediates: x509.NewCertPool(),
		}
		for _, ic := range cs.PeerCertificates[1:] {
			opts.Intermediates.AddCert(ic)
		}
		_, err := cs.PeerCertificates[0].Verify(opts)
		return err
	}
	return c
}

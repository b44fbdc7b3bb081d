// Package embeddedpg runs the embedded Postgres of local runs and tests:
// PGlite (Postgres compiled to WebAssembly, with pgvector) served over the
// Postgres wire protocol by @electric-sql/pglite-socket, under node, on a
// free loopback port.
//
// The npm packages are pinned in deployments/pglite (package.json and
// package-lock.json) and installed there by `make` (npm ci). Start finds
// that directory by walking up from the working directory, or takes it
// from Config.PackageDir or $COLPALI_PGLITE_DIR.
//
// What PGlite is, and what follows for its callers: one Postgres backend
// shared by every client connection. The socket server queues statements
// from all connections and runs a transaction's statements without
// interleaving others, so transactions are serialised (correct, no
// parallelism), and session state (SET, named prepared statements, session
// advisory locks) is shared by all connections. Clients therefore keep
// session state out of their protocol: store uses pgx's describe-cache
// exec mode (unnamed statements) and transaction-scoped settings only.
//
// The server process runs in its own process group; Stop ends the group
// (SIGTERM, then SIGKILL after StopTimeout). On Linux the child also gets
// SIGKILL when its parent dies (Pdeathsig), so a crashed gateway does not
// leave a server behind. (Pdeathsig follows the OS thread that started the
// child; the Go runtime does not end its threads except under
// runtime.LockOSThread, which nothing here uses.)
package embeddedpg

import (
	"bufio"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/morphik-org/colpali-gateway/internal/redact"
)

// PackageDirEnv names the environment variable that overrides where the npm
// packages are installed.
const PackageDirEnv = "COLPALI_PGLITE_DIR"

// relPackageDir is where the npm packages live inside the repository.
const relPackageDir = "deployments/pglite"

// serverScript is pglite-socket's CLI entry point, relative to PackageDir.
const serverScript = "node_modules/@electric-sql/pglite-socket/dist/scripts/server.js"

// ErrNotInstalled: the npm packages are not installed; run `make install`.
var ErrNotInstalled = errors.New("embedded postgres: npm packages not installed (run `make install`)")

// Config configures Start. The zero value is usable.
type Config struct {
	// Dir is the data directory; "" keeps the database in memory, gone on Stop.
	Dir string
	// Logger receives the server's output at debug level. Default: discard.
	Logger *slog.Logger
	// PackageDir holds package.json and node_modules. Default:
	// $COLPALI_PGLITE_DIR, else deployments/pglite found by walking up
	// from the working directory.
	PackageDir string
	// Node is the node binary. Default: "node" from $PATH.
	Node string
	// MaxConnections is how many client connections the server accepts at
	// once (they are served one transaction at a time). Default 8.
	MaxConnections int
	// StartTimeout bounds how long Start waits for the first successful
	// connection. Default 60s.
	StartTimeout time.Duration
	// StopTimeout is how long Stop waits after SIGTERM before SIGKILL. Default 10s.
	StopTimeout time.Duration
}

// WithDefaults returns c with every zero field set to its default.
func (c Config) WithDefaults() Config {
	c.Logger = cmp.Or(c.Logger, slog.New(slog.DiscardHandler))
	c.PackageDir = cmp.Or(c.PackageDir, os.Getenv(PackageDirEnv))
	c.Node = cmp.Or(c.Node, "node")
	c.MaxConnections = cmp.Or(c.MaxConnections, 8)
	c.StartTimeout = cmp.Or(c.StartTimeout, 60*time.Second)
	c.StopTimeout = cmp.Or(c.StopTimeout, 10*time.Second)
	return c
}

// Validate names the first bad field.
func (c Config) Validate() error {
	switch {
	case c.MaxConnections < 1:
		return fmt.Errorf("embeddedpg: MaxConnections %d: must be at least 1", c.MaxConnections)
	case c.StartTimeout <= 0:
		return fmt.Errorf("embeddedpg: StartTimeout %v: must be positive", c.StartTimeout)
	case c.StopTimeout <= 0:
		return fmt.Errorf("embeddedpg: StopTimeout %v: must be positive", c.StopTimeout)
	}
	return nil
}

// Server is a running embedded Postgres.
type Server struct {
	url      string
	cmd      *exec.Cmd
	exited   chan struct{} // closed when the process has exited
	waitErr  error         // valid after exited is closed
	logsDone chan struct{}
	stopOnce sync.Once
	stopErr  error
	timeout  time.Duration
	logger   *slog.Logger
}

// Start launches the server and returns once a connection succeeds. The
// server outlives ctx; call Stop.
func Start(ctx context.Context, cfg Config) (*Server, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	pkgDir, err := findPackageDir(cfg.PackageDir)
	if err != nil {
		return nil, err
	}
	db := "memory://"
	if cfg.Dir != "" {
		abs, err := filepath.Abs(cfg.Dir)
		if err != nil {
			return nil, fmt.Errorf("embeddedpg: data dir: %w", err)
		}
		if err := os.MkdirAll(abs, 0o700); err != nil {
			return nil, fmt.Errorf("embeddedpg: data dir: %w", err)
		}
		db = abs
	}
	// The port is picked by binding :0 and released before node binds it;
	// another process may take it in between, so a failed start on a
	// fresh port is retried.
	var lastErr error
	for range 3 {
		port, err := freePort()
		if err != nil {
			return nil, err
		}
		s, err := launch(ctx, cfg, pkgDir, db, port)
		if err == nil {
			return s, nil
		}
		lastErr = err
		if ctx.Err() != nil {
			break
		}
	}
	return nil, lastErr
}

func launch(ctx context.Context, cfg Config, pkgDir, db string, port int) (*Server, error) {
	cmd := exec.Command(cfg.Node, filepath.Join(pkgDir, serverScript), // #nosec G204 -- node and the script come from the operator's configuration and the install, never from a request
		"--db="+db,
		"--host=127.0.0.1",
		"--port="+strconv.Itoa(port),
		"--extensions=@electric-sql/pglite-pgvector:vector",
		"--max-connections="+strconv.Itoa(cfg.MaxConnections),
	)
	cmd.Dir = pkgDir
	cmd.SysProcAttr = sysProcAttr()
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	cmd.Stderr = cmd.Stdout // one pipe, one reader
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("embeddedpg: start %s: %w", cfg.Node, err)
	}
	s := &Server{
		url:      fmt.Sprintf("postgres://postgres:postgres@127.0.0.1:%d/postgres?sslmode=disable", port),
		cmd:      cmd,
		exited:   make(chan struct{}),
		logsDone: make(chan struct{}),
		timeout:  cfg.StopTimeout,
		logger:   cfg.Logger.With("component", "embeddedpg", "pid", cmd.Process.Pid),
	}
	tail := &lineTail{max: 20}
	go s.copyLogs(out, tail)
	go func() {
		<-s.logsDone // Wait closes the pipe: read it to the end first
		s.waitErr = cmd.Wait()
		close(s.exited)
	}()

	startCtx, cancel := context.WithTimeout(ctx, cfg.StartTimeout)
	defer cancel()
	if err := s.waitReady(startCtx); err != nil {
		_ = s.Stop()
		return nil, fmt.Errorf("embeddedpg: %w; server output:\n%s", err, tail.String())
	}
	s.logger.Info("embedded postgres ready", "url", redact.URL(s.url), "db", db)
	return s, nil
}

// waitReady polls until a connection succeeds, the process exits or ctx ends.
func (s *Server) waitReady(ctx context.Context) error {
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		conn, err := pgx.Connect(ctx, s.url)
		if err == nil {
			err = conn.Ping(ctx)
			_ = conn.Close(context.WithoutCancel(ctx))
			if err == nil {
				return nil
			}
		}
		select {
		case <-s.exited:
			return fmt.Errorf("server exited before accepting connections: %v", s.waitErr)
		case <-ctx.Done():
			return fmt.Errorf("server not ready: %w (last error: %v)", ctx.Err(), err)
		case <-tick.C:
		}
	}
}

func (s *Server) copyLogs(r io.Reader, tail *lineTail) {
	defer close(s.logsDone)
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		tail.add(line)
		s.logger.Debug("pglite", "line", line)
	}
	_, _ = io.Copy(io.Discard, r)
}

// URL is the connection string: postgres://...@127.0.0.1:PORT/postgres?sslmode=disable.
func (s *Server) URL() string { return s.url }

// Stop ends the server's process group: SIGTERM, and SIGKILL if it has not
// exited within StopTimeout. It is safe to call more than once.
func (s *Server) Stop() error {
	s.stopOnce.Do(func() {
		pgid := s.cmd.Process.Pid
		_ = syscall.Kill(-pgid, syscall.SIGTERM)
		t := time.NewTimer(s.timeout)
		defer t.Stop()
		select {
		case <-s.exited:
		case <-t.C:
			s.logger.Warn("embedded postgres did not stop in time; killing it", "timeout", s.timeout)
			_ = syscall.Kill(-pgid, syscall.SIGKILL)
			<-s.exited
		}
		var exitErr *exec.ExitError
		if s.waitErr != nil && !(errors.As(s.waitErr, &exitErr) && !exitErr.Exited()) {
			// Killed by our own signal is a normal end; an exit code is not.
			s.stopErr = fmt.Errorf("embeddedpg: server exited: %w", s.waitErr)
		}
	})
	return s.stopErr
}

// Exited is closed when the server process has ended, for whatever reason.
func (s *Server) Exited() <-chan struct{} { return s.exited }

func findPackageDir(dir string) (string, error) {
	if dir == "" {
		wd, err := os.Getwd()
		if err != nil {
			return "", err
		}
		for d := wd; ; d = filepath.Dir(d) {
			if _, err := os.Stat(filepath.Join(d, relPackageDir, "package.json")); err == nil {
				dir = filepath.Join(d, relPackageDir)
				break
			}
			if filepath.Dir(d) == d {
				return "", fmt.Errorf("%w: no %s above %s; set %s", ErrNotInstalled, relPackageDir, wd, PackageDirEnv)
			}
		}
	}
	if _, err := os.Stat(filepath.Join(dir, serverScript)); err != nil {
		return "", fmt.Errorf("%w: %v", ErrNotInstalled, err)
	}
	return filepath.Abs(dir)
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("embeddedpg: pick a port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// lineTail keeps the last lines of output for error messages.
type lineTail struct {
	mu    sync.Mutex
	max   int
	lines []string
}

func (t *lineTail) add(line string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.lines = append(t.lines, line)
	if len(t.lines) > t.max {
		t.lines = t.lines[len(t.lines)-t.max:]
	}
}

func (t *lineTail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	var b []byte
	for _, l := range t.lines {
		b = append(b, l...)
		b = append(b, '\n')
	}
	return string(b)
}

// Cmd is the server's process, for tests and diagnostics.
func (s *Server) Cmd() *exec.Cmd { return s.cmd }

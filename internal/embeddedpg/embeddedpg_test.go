package embeddedpg_test

import (
	"bytes"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/morphik-org/colpali-gateway/internal/embeddedpg"
	"github.com/morphik-org/colpali-gateway/internal/testutil"
)

// lockedBuffer is a log destination written from several goroutines.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// TestStartServesPgvectorAndPersists starts a server on a data directory,
// writes a vector, stops it, and finds the vector again after a restart.
func TestStartServesPgvectorAndPersists(t *testing.T) {
	dir := t.TempDir()
	cfg := embeddedpg.Config{Dir: dir, Logger: testutil.Logger(t), StartTimeout: testutil.StartTimeout}

	srv, err := embeddedpg.Start(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx := testutil.Context(t) // once the server is up: see testutil.StartTimeout
	if !strings.HasPrefix(srv.URL(), "postgres://postgres:postgres@127.0.0.1:") {
		t.Errorf("URL() = %q, want a loopback postgres URL", srv.URL())
	}
	conn, err := pgx.Connect(ctx, srv.URL())
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{
		`CREATE EXTENSION IF NOT EXISTS vector`,
		`CREATE TABLE v (h halfvec(3))`,
		`INSERT INTO v VALUES ('[1,2,3]')`,
	} {
		if _, err := conn.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	_ = conn.Close(ctx)
	pid := srv.Cmd().Process.Pid
	if err := srv.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if err := srv.Stop(); err != nil {
		t.Fatalf("second Stop: %v", err)
	}
	if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("server process %d still exists after Stop (kill 0: %v)", pid, err)
	}

	// The URL is logged, its password not.
	var logged lockedBuffer
	cfg.Logger = slog.New(slog.NewTextHandler(&logged, nil))
	srv, err = embeddedpg.Start(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Stop() })
	ctx = testutil.Context(t)
	if out := logged.String(); strings.Contains(out, ":postgres@") || !strings.Contains(out, "postgres://postgres:xxxxx@127.0.0.1:") {
		t.Errorf("the start-up log shows the password, or no redacted URL:\n%s", out)
	}
	conn, err = pgx.Connect(ctx, srv.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var got string
	if err := conn.QueryRow(ctx, `SELECT h::text FROM v`).Scan(&got); err != nil {
		t.Fatal(err)
	}
	if got != "[1,2,3]" {
		t.Errorf("after restart: %q, want [1,2,3]", got)
	}
}

func TestStartFailsWithoutPackages(t *testing.T) {
	ctx := testutil.Context(t)
	_, err := embeddedpg.Start(ctx, embeddedpg.Config{PackageDir: t.TempDir(), StartTimeout: 5 * time.Second})
	if !errors.Is(err, embeddedpg.ErrNotInstalled) {
		t.Fatalf("Start with an empty package dir: %v, want ErrNotInstalled", err)
	}
}

func TestConfigValidateNamesField(t *testing.T) {
	err := embeddedpg.Config{MaxConnections: -1}.WithDefaults().Validate()
	if err == nil || !strings.Contains(err.Error(), "MaxConnections") {
		t.Fatalf("Validate = %v, want an error naming MaxConnections", err)
	}
}

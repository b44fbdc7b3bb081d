package keyscli_test

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/morphik-org/colpali-gateway/auth"
	"github.com/morphik-org/colpali-gateway/auth/apikey"
	"github.com/morphik-org/colpali-gateway/auth/keyscli"
	"github.com/morphik-org/colpali-gateway/internal/errclass"
	"github.com/morphik-org/colpali-gateway/internal/testutil"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fakeKeys is a keyscli.Keys with function fields.
type fakeKeys struct {
	create func(tenant string, scopes []auth.Scope, ttl time.Duration) (string, apikey.Record, error)
	list   func(tenant string) ([]apikey.Record, error)
	revoke func(ref, tenant string) (apikey.Record, error)
}

func (f *fakeKeys) Create(_ context.Context, tenant string, scopes []auth.Scope, ttl time.Duration) (string, apikey.Record, error) {
	return f.create(tenant, scopes, ttl)
}
func (f *fakeKeys) List(_ context.Context, tenant string) ([]apikey.Record, error) {
	return f.list(tenant)
}
func (f *fakeKeys) Revoke(_ context.Context, ref, tenant string) (apikey.Record, error) {
	return f.revoke(ref, tenant)
}

var _ keyscli.Keys = (*fakeKeys)(nil)

const plainKey = "cpk_abcdefgh_0123456789012345678901234567890123456789012"

func run(t *testing.T, f *fakeKeys, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	var out, errOut bytes.Buffer
	err = keyscli.Run(testutil.Context(t), args, &out, &errOut, f)
	return out.String(), errOut.String(), err
}

func TestCreate(t *testing.T) {
	var gotScopes []auth.Scope
	var gotTTL time.Duration
	f := &fakeKeys{create: func(tenant string, scopes []auth.Scope, ttl time.Duration) (string, apikey.Record, error) {
		gotScopes, gotTTL = scopes, ttl
		return plainKey, apikey.Record{ID: 7, Prefix: "abcdefgh", Tenant: tenant, Scopes: scopes}, nil
	}}
	out, errOut, err := run(t, f, "create", "--tenant", "team-a", "--scopes", "admin,embed", "--expires", "720h")
	if err != nil {
		t.Fatal(err)
	}
	if out != plainKey+"\n" {
		t.Errorf("stdout %q, want the key alone", out)
	}
	if !strings.Contains(errOut, "will not be shown again") || !strings.Contains(errOut, "cpk_abcdefgh") || strings.Contains(errOut, plainKey) {
		t.Errorf("stderr %q", errOut)
	}
	if len(gotScopes) != 2 || gotScopes[0] != auth.ScopeEmbed || gotTTL != 720*time.Hour {
		t.Errorf("scopes %v ttl %v", gotScopes, gotTTL)
	}
	// Defaults, and -quiet.
	out, errOut, err = run(t, f, "create", "-tenant", "t", "-quiet")
	if err != nil || out != plainKey+"\n" || errOut != "" {
		t.Errorf("quiet: %q %q %v", out, errOut, err)
	}
	if len(gotScopes) != len(keyscli.DefaultScopes) || gotTTL != 0 {
		t.Errorf("default scopes %v ttl %v", gotScopes, gotTTL)
	}
}

func TestCreateReportsEveryBadFlag(t *testing.T) {
	f := &fakeKeys{create: func(string, []auth.Scope, time.Duration) (string, apikey.Record, error) {
		t.Fatal("created despite bad flags")
		return "", apikey.Record{}, nil
	}}
	_, _, err := run(t, f, "create", "-scopes", "embed,root", "-expires", "-1h")
	if !errors.Is(err, keyscli.ErrUsage) {
		t.Fatalf("%v", err)
	}
	for _, want := range []string{"-tenant: required", "-scopes", "root", "-expires"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not name %s: %v", want, err)
		}
	}
	if _, _, err := run(t, f, "create", "-tenant", "t", "extra"); !errors.Is(err, keyscli.ErrUsage) {
		t.Errorf("extra argument: %v", err)
	}
}

func TestList(t *testing.T) {
	past := time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)
	future := time.Date(2999, 1, 1, 0, 0, 0, 0, time.UTC)
	var gotTenant string
	f := &fakeKeys{list: func(tenant string) ([]apikey.Record, error) {
		gotTenant = tenant
		return []apikey.Record{
			{ID: 1, Prefix: "aaaaaaaa", Tenant: "a", Scopes: []auth.Scope{auth.ScopeEmbed}, CreatedAt: past},
			{ID: 2, Prefix: "bbbbbbbb", Tenant: "a", Scopes: auth.AllScopes, CreatedAt: past, ExpiresAt: past},
			{ID: 3, Prefix: "cccccccc", Tenant: "a", CreatedAt: past, ExpiresAt: future, RevokedAt: past, LastUsedAt: past},
		}, nil
	}}
	out, _, err := run(t, f, "list", "-tenant", "a")
	if err != nil || gotTenant != "a" {
		t.Fatal(err, gotTenant)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 4 || !strings.HasPrefix(lines[0], "KEY ") {
		t.Fatalf("table:\n%s", out)
	}
	for i, want := range []string{"active", "expired", "revoked"} {
		if !strings.HasSuffix(lines[i+1], want) || !strings.HasPrefix(lines[i+1], "cpk_") {
			t.Errorf("row %d: %q, want status %s", i+1, lines[i+1], want)
		}
	}
}

func TestRevoke(t *testing.T) {
	f := &fakeKeys{revoke: func(ref, tenant string) (apikey.Record, error) {
		if ref != "abcdefgh" {
			return apikey.Record{}, errclass.Errorf(errclass.NotFound, "API key %s: no such key", ref)
		}
		return apikey.Record{ID: 7, Prefix: ref, Tenant: "a", RevokedAt: time.Now()}, nil
	}}
	out, _, err := run(t, f, "revoke", "abcdefgh")
	if err != nil || !strings.Contains(out, "Revoked cpk_abcdefgh") {
		t.Fatalf("%q %v", out, err)
	}
	if _, _, err := run(t, f, "revoke", "zzzzzzzz"); !errors.Is(err, errclass.NotFound) {
		t.Errorf("unknown: %v", err)
	}
	if _, _, err := run(t, f, "revoke"); !errors.Is(err, keyscli.ErrUsage) {
		t.Errorf("no prefix: %v", err)
	}
}

func TestUsage(t *testing.T) {
	for _, args := range [][]string{nil, {"rotate"}} {
		_, errOut, err := run(t, &fakeKeys{}, args...)
		if !errors.Is(err, keyscli.ErrUsage) || !strings.Contains(errOut, "usage: gateway keys") {
			t.Errorf("%v: %v %q", args, err, errOut)
		}
	}
	out, _, err := run(t, &fakeKeys{}, "help")
	if err != nil || !strings.Contains(out, "revoke") {
		t.Errorf("help: %v", err)
	}
}

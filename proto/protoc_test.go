package proto

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// oldest is the oldest protoc the public API is tested with: Debian 12's.
// `make test` installs it when protoc is missing and it runs as root.
const oldest = "3.21"

// publicProtos are the public API's files, relative to this directory.
func publicProtos(t *testing.T) []string {
	t.Helper()
	files, err := filepath.Glob("colpali/v1/*.proto")
	if err != nil || len(files) == 0 {
		t.Fatalf("no public .proto files found (%v)", err)
	}
	return files
}

// protoc returns the protoc to test with ($PROTOC, or the one on PATH) and
// its version, skipping the test when there is none.
func protoc(t *testing.T) (string, string) {
	t.Helper()
	bin := os.Getenv("PROTOC")
	if bin == "" {
		var err error
		if bin, err = exec.LookPath("protoc"); err != nil {
			t.Skipf("protoc is not on PATH, so the public API was NOT checked against protoc %s: "+
				"install it (Debian: apt-get install protobuf-compiler) or set PROTOC", oldest)
		}
	}
	out, err := exec.Command(bin, "--version").CombinedOutput()
	if err != nil {
		t.Fatalf("%s --version: %v\n%s", bin, err, out)
	}
	m := regexp.MustCompile(`(\d+)\.(\d+)(\.\d+)?`).FindStringSubmatch(string(out))
	if m == nil {
		t.Fatalf("%s --version printed %q: no version number", bin, out)
	}
	version := m[0]
	major, _ := strconv.Atoi(m[1])
	minor, _ := strconv.Atoi(m[2])
	// 3.x up to 3.21, then 22, 23, ... (the "3." was dropped).
	if major < 3 || major == 3 && minor < 21 {
		t.Logf("protoc %s is older than %s, the oldest the API claims to support", version, oldest)
	}
	t.Logf("testing with %s (protoc %s)", bin, version)
	return bin, version
}

// run runs protoc with args in this directory and fails the test with its
// output if it fails or warns.
func run(t *testing.T, bin string, args ...string) {
	t.Helper()
	out, err := exec.Command(bin, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("protoc %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	// Old protoc only warns when it misreads a file (a missing syntax line
	// defaults to proto2), so a warning is a failure too.
	if len(out) > 0 {
		t.Errorf("protoc %s printed:\n%s", strings.Join(args, " "), out)
	}
}

// TestOldestProtocCompilesPublicAPI generates the code a client would
// generate from the .proto files, in the languages protoc has built in.
func TestOldestProtocCompilesPublicAPI(t *testing.T) {
	bin, _ := protoc(t)
	out := t.TempDir()
	for _, lang := range []string{"python", "java", "cpp", "csharp"} {
		if err := os.Mkdir(filepath.Join(out, lang), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	args := []string{"-I", ".",
		"--descriptor_set_out=" + filepath.Join(out, "api.pb"), "--include_imports",
		"--python_out=" + filepath.Join(out, "python"),
		"--java_out=" + filepath.Join(out, "java"),
		"--cpp_out=" + filepath.Join(out, "cpp"),
		"--csharp_out=" + filepath.Join(out, "csharp"),
	}
	run(t, bin, append(args, publicProtos(t)...)...)
}

// TestOldestProtocReadsProtoset checks that gen/colpali.protoset, the
// descriptor set for clients that take one (ghz, grpcurl, Postman), can be
// read by the same protoc in place of the sources.
func TestOldestProtocReadsProtoset(t *testing.T) {
	bin, _ := protoc(t)
	out := t.TempDir()
	args := []string{"--descriptor_set_in=" + filepath.Join("..", "gen", "colpali.protoset"), "--python_out=" + out}
	run(t, bin, append(args, publicProtos(t)...)...)
}

package bulkingest

import (
	"cmp"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"unicode"
)

// Document is one document found in the folder: its pages (image files, in
// page order) and its metadata.
type Document struct {
	// Name is the sub-folder's name, or the file group's stem.
	Name string
	// Pages are the image files, in page order.
	Pages []string
	// Metadata comes from the sidecar file, plus "source" (Name) unless the
	// sidecar sets it.
	Metadata map[string]string
}

// sidecarName is a sub-folder's metadata file; a file group's is
// <stem>.json beside its images.
const sidecarName = "metadata.json"

// isImage reports whether name is a page image by its extension.
func isImage(name string) bool {
	switch strings.ToLower(filepath.Ext(name)) {
	case ".png", ".jpg", ".jpeg":
		return true
	}
	return false
}

// Scan finds the documents in dir: every sub-folder holding images is one
// document, and the images directly in dir are grouped by their stem
// without a trailing page number ("report-001.png" and "report-002.png"
// are the two pages of "report"). Pages sort by name, numbers compared as
// numbers ("p2" before "p10"). Deeper folders are not read. Documents are
// returned by name.
func Scan(dir string) ([]Document, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var docs []Document
	groups := map[string][]string{}
	for _, e := range entries {
		path := filepath.Join(dir, e.Name())
		switch {
		case e.IsDir():
			pages, err := imagesIn(path)
			if err != nil {
				return nil, err
			}
			if len(pages) == 0 {
				continue
			}
			md, err := readSidecar(filepath.Join(path, sidecarName))
			if err != nil {
				return nil, err
			}
			docs = append(docs, newDocument(e.Name(), pages, md))
		case e.Type().IsRegular() && isImage(e.Name()):
			stem := groupStem(e.Name())
			groups[stem] = append(groups[stem], path)
		}
	}
	for stem, pages := range groups {
		md, err := readSidecar(filepath.Join(dir, stem+".json"))
		if err != nil {
			return nil, err
		}
		slices.SortFunc(pages, naturalCompare)
		docs = append(docs, newDocument(stem, pages, md))
	}
	slices.SortFunc(docs, func(a, b Document) int { return naturalCompare(a.Name, b.Name) })
	for i := 1; i < len(docs); i++ {
		if docs[i].Name == docs[i-1].Name {
			return nil, fmt.Errorf("%s: a folder and a file group are both named %q; rename one", dir, docs[i].Name)
		}
	}
	return docs, nil
}

func newDocument(name string, pages []string, md map[string]string) Document {
	if md == nil {
		md = map[string]string{}
	}
	if _, ok := md["source"]; !ok {
		md["source"] = name
	}
	return Document{Name: name, Pages: pages, Metadata: md}
}

// imagesIn lists the images directly in dir, in page order.
func imagesIn(dir string) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var pages []string
	for _, e := range entries {
		if e.Type().IsRegular() && isImage(e.Name()) {
			pages = append(pages, filepath.Join(dir, e.Name()))
		}
	}
	slices.SortFunc(pages, naturalCompare)
	return pages, nil
}

// readSidecar reads a JSON object of strings; a missing file is no
// metadata.
func readSidecar(path string) (map[string]string, error) {
	b, err := os.ReadFile(path) // #nosec G304 -- a sidecar in the operator's own folder
	if os.IsNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var md map[string]string
	if err := json.Unmarshal(b, &md); err != nil {
		return nil, fmt.Errorf("%s: want a JSON object of strings: %w", path, err)
	}
	return md, nil
}

// groupStem is a file's name without its extension and without a trailing
// page number and its separator: "report-001.png" and "report_2.jpg" are
// "report"; "cover.png" is "cover".
func groupStem(name string) string {
	stem := strings.TrimSuffix(name, filepath.Ext(name))
	trimmed := strings.TrimRightFunc(stem, unicode.IsDigit)
	if trimmed == stem || trimmed == "" {
		return stem
	}
	if base := strings.TrimRight(trimmed, "-_. "); base != "" && base != trimmed {
		return base
	}
	// "page3": a number glued to a word is a page number only with a
	// separator; otherwise the whole stem names the document.
	return stem
}

// naturalCompare orders strings with their runs of digits compared as
// numbers.
func naturalCompare(a, b string) int {
	for a != "" && b != "" {
		da, db := digitPrefix(a), digitPrefix(b)
		if da != "" && db != "" {
			na, _ := strconv.ParseUint(strings.TrimLeft(da, "0")+"0", 10, 64)
			nb, _ := strconv.ParseUint(strings.TrimLeft(db, "0")+"0", 10, 64)
			if c := cmp.Compare(na, nb); c != 0 {
				return c
			}
			a, b = a[len(da):], b[len(db):]
			continue
		}
		if a[0] != b[0] {
			return cmp.Compare(a[0], b[0])
		}
		a, b = a[1:], b[1:]
	}
	return cmp.Compare(len(a), len(b))
}

func digitPrefix(s string) string {
	i := 0
	for i < len(s) && s[i] >= '0' && s[i] <= '9' {
		i++
	}
	return s[:i]
}

// IdempotencyKey derives d's key from its content: SHA-256 over its
// metadata (sorted) and its pages' bytes, each length-prefixed. The same
// folder ingested again gives the same keys, so a re-run after a crash
// skips what was stored; a changed page or metadata value makes a new
// document.
func IdempotencyKey(d Document) (string, error) {
	h := sha256.New()
	field := func(b []byte) {
		var n [8]byte
		binary.LittleEndian.PutUint64(n[:], uint64(len(b)))
		h.Write(n[:])
		h.Write(b)
	}
	keys := make([]string, 0, len(d.Metadata))
	for k := range d.Metadata {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		field([]byte(k))
		field([]byte(d.Metadata[k]))
	}
	for _, p := range d.Pages {
		f, err := os.Open(p) // #nosec G304 -- reading the operator's own folder is the command's job
		if err != nil {
			return "", err
		}
		st, err := f.Stat()
		if err == nil {
			var n [8]byte
			binary.LittleEndian.PutUint64(n[:], uint64(st.Size())) // #nosec G115 -- a file size is never negative
			h.Write(n[:])
			_, err = io.Copy(h, f)
		}
		_ = f.Close() // read only: nothing to flush
		if err != nil {
			return "", fmt.Errorf("%s: %w", p, err)
		}
	}
	return "bulk-" + hex.EncodeToString(h.Sum(nil)), nil
}

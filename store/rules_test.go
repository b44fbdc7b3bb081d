package store

import "testing"

func TestRules(t *testing.T) {
	for _, tc := range []struct {
		field       string
		key         string
		isID, known bool
	}{
		{"document_id", "", true, true},
		{"metadata.title", "title", false, true},
		{"metadata.", "", false, false},
		{"title", "", false, false},
		{"Document_id", "", false, false},
	} {
		key, isID, known := ParseFilterField(tc.field)
		if key != tc.key || isID != tc.isID || known != tc.known {
			t.Errorf("ParseFilterField(%q) = %q, %v, %v; want %q, %v, %v", tc.field, key, isID, known, tc.key, tc.isID, tc.known)
		}
	}
	for id, want := range map[string]bool{
		"0b6f2c1e-4d2a-4c8e-9f61-3a5d7e9b1c20": true,
		"0B6F2C1E-4D2A-4C8E-9F61-3A5D7E9B1C20": true,
		"0b6f2c1e4d2a4c8e9f613a5d7e9b1c20":     false,
		"0b6f2c1e-4d2a-4c8e-9f61-3a5d7e9b1c2g": false,
		"":                                     false,
	} {
		if got := ValidDocumentID(id); got != want {
			t.Errorf("ValidDocumentID(%q) = %v, want %v", id, got, want)
		}
	}
	for s, want := range map[string]string{"ok": "", "caf\xe9": "is not valid UTF-8", "a\x00b": "contains a NUL character"} {
		if got := TextProblem(s); got != want {
			t.Errorf("TextProblem(%q) = %q, want %q", s, got, want)
		}
	}
}

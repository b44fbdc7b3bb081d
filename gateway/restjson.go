package gateway

import (
	"encoding/base64"
	"strconv"
	"unicode/utf8"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	spb "google.golang.org/genproto/googleapis/rpc/status"

	colpaliv1 "github.com/morphik-org/colpali-gateway/gen/colpali/v1"
)

// restMarshaler is grpc-gateway's JSONPb with a direct path for the
// embedding responses, the bulk of the REST traffic's bytes, and for error
// statuses, the bulk of its answers under overload. protojson
// walks the message by reflection and writes the packed vectors as a base64
// string that it then scans again for characters to escape (there are none
// in base64); written directly, the same JSON costs a fraction of it. The
// output parses to the same JSON as protojson's (which adds whitespace at
// random, so no client can depend on its bytes). Anything else, and an
// embedding in EMBEDDING_ENCODING_FLOAT_LIST, goes to JSONPb.
type restMarshaler struct {
	*runtime.JSONPb
}

func (m restMarshaler) Marshal(v any) ([]byte, error) {
	switch r := v.(type) {
	case *colpaliv1.EmbedQueriesResponse:
		if packed(r.GetEmbeddings()) {
			return appendEmbedResponse(nil, r.GetEmbeddings(), r.GetModel()), nil
		}
	case *colpaliv1.EmbedImagesResponse:
		if packed(r.GetEmbeddings()) {
			return appendEmbedResponse(nil, r.GetEmbeddings(), r.GetModel()), nil
		}
	case *spb.Status: // every error's body (reststatus.go)
		if b, err := appendStatusJSON(nil, r); err == nil {
			return b, nil
		}
	}
	return m.JSONPb.Marshal(v)
}

// packed reports whether every embedding is in a packed encoding (no
// Vectors), the only shape appendEmbedResponse writes.
func packed(embs []*colpaliv1.MultiVector) bool {
	for _, e := range embs {
		if len(e.GetVectors()) > 0 {
			return false
		}
	}
	return true
}

// appendEmbedResponse writes an Embed*Response as protojson does with
// JSONPb's options: lowerCamelCase names, fields in field-number order,
// zero values left out, enums by name, bytes as padded standard base64.
func appendEmbedResponse(b []byte, embs []*colpaliv1.MultiVector, model string) []byte {
	size := 32 + len(model)
	for _, e := range embs {
		size += 96 + base64.StdEncoding.EncodedLen(len(e.GetData()))
	}
	if cap(b)-len(b) < size {
		b = append(make([]byte, 0, len(b)+size), b...)
	}
	b = append(b, '{')
	sep := false
	if len(embs) > 0 {
		b = append(b, `"embeddings":[`...)
		for i, e := range embs {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendMultiVector(b, e)
		}
		b = append(b, ']')
		sep = true
	}
	if model != "" {
		if sep {
			b = append(b, ',')
		}
		b = append(b, `"model":`...)
		b = appendJSONString(b, model)
	}
	return append(b, '}')
}

func appendMultiVector(b []byte, e *colpaliv1.MultiVector) []byte {
	b = append(b, '{')
	sep := false
	if v := e.GetVectorCount(); v != 0 {
		b = appendField(b, &sep, "vectorCount")
		b = strconv.AppendInt(b, int64(v), 10)
	}
	if v := e.GetDimension(); v != 0 {
		b = appendField(b, &sep, "dimension")
		b = strconv.AppendInt(b, int64(v), 10)
	}
	if v := e.GetDataType(); v != 0 {
		b = appendField(b, &sep, "dataType")
		if name, ok := colpaliv1.DataType_name[int32(v)]; ok {
			b = append(b, '"')
			b = append(b, name...)
			b = append(b, '"')
		} else { // a value this build does not know: protojson writes its number
			b = strconv.AppendInt(b, int64(v), 10)
		}
	}
	if d := e.GetData(); len(d) > 0 {
		b = appendField(b, &sep, "data")
		b = append(b, '"')
		b = base64.StdEncoding.AppendEncode(b, d)
		b = append(b, '"')
	}
	return append(b, '}')
}

// appendField appends the name of a field of the JSON object being
// written, after a comma unless it is the first (sep says whether one was
// written; it is set).
func appendField(b []byte, sep *bool, name string) []byte {
	if *sep {
		b = append(b, ',')
	}
	*sep = true
	b = append(b, '"')
	b = append(b, name...)
	return append(b, `":`...)
}

// appendJSONString appends s as a JSON string: quotes, backslashes and
// control characters escaped, invalid UTF-8 replaced by U+FFFD (as
// encoding/json does), everything else as is. Error messages are on the
// path of every refusal, where encoding/json's allocations showed.
func appendJSONString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	start := 0 // s[start:i] is yet to be copied
	for i := 0; i < len(s); {
		c := s[i]
		if c >= utf8.RuneSelf {
			r, size := utf8.DecodeRuneInString(s[i:])
			if r == utf8.RuneError && size == 1 {
				b = append(b, s[start:i]...)
				b = append(b, `\ufffd`...)
				i += size
				start = i
				continue
			}
			i += size
			continue
		}
		if c >= 0x20 && c != '"' && c != '\\' {
			i++
			continue
		}
		b = append(b, s[start:i]...)
		switch c {
		case '"', '\\':
			b = append(b, '\\', c)
		case '\n':
			b = append(b, `\n`...)
		case '\r':
			b = append(b, `\r`...)
		case '\t':
			b = append(b, `\t`...)
		default:
			b = append(b, `\u00`...)
			b = append(b, hex[c>>4], hex[c&0xf])
		}
		i++
		start = i
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

package gateway

import (
	"errors"
	"maps"
	"slices"
	"strconv"
	"strings"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	spb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
)

// errUnknownDetail: a status carries a detail appendStatusJSON does not
// write; protojson does.
var errUnknownDetail = errors.New("status detail of a type not written directly")

// The type URLs of the details the edge sends (status.go's details).
var (
	badRequestURL = typeURL(&errdetails.BadRequest{})
	retryInfoURL  = typeURL(&errdetails.RetryInfo{})
	errorInfoURL  = typeURL(&errdetails.ErrorInfo{})
)

func typeURL(m proto.Message) string {
	return "type.googleapis.com/" + string(m.ProtoReflect().Descriptor().FullName())
}

// appendStatusJSON writes a google.rpc.Status, the body of every REST
// error, as protojson does with JSONPb's options, for the details the edge
// sends (BadRequest, RetryInfo, ErrorInfo); errUnknownDetail for any other.
// Under overload most REST answers are refusals, and protojson's
// reflective walk, resolving each Any's type by name, was a tenth of a
// refusal's CPU; written directly it costs a fraction of that.
func appendStatusJSON(b []byte, st *spb.Status) ([]byte, error) {
	b = append(b, '{')
	sep := false
	if st.GetCode() != 0 {
		b = appendField(b, &sep, "code")
		b = strconv.AppendInt(b, int64(st.GetCode()), 10)
	}
	if st.GetMessage() != "" {
		b = appendField(b, &sep, "message")
		b = appendJSONString(b, st.GetMessage())
	}
	if len(st.GetDetails()) > 0 {
		b = appendField(b, &sep, "details")
		b = append(b, '[')
		for i, d := range st.GetDetails() {
			if i > 0 {
				b = append(b, ',')
			}
			var err error
			if b, err = appendDetailJSON(b, d); err != nil {
				return nil, err
			}
		}
		b = append(b, ']')
	}
	return append(b, '}'), nil
}

// appendDetailJSON writes one detail as protojson writes an Any: its
// "@type", then the message's own fields.
func appendDetailJSON(b []byte, d *anypb.Any) ([]byte, error) {
	b = append(b, `{"@type":`...)
	b = appendJSONString(b, d.GetTypeUrl())
	switch d.GetTypeUrl() {
	case retryInfoURL:
		var m errdetails.RetryInfo
		if err := proto.Unmarshal(d.GetValue(), &m); err != nil {
			return nil, err
		}
		if m.GetRetryDelay() != nil {
			b = append(b, `,"retryDelay":`...)
			b = appendDurationJSON(b, m.GetRetryDelay())
		}
	case errorInfoURL:
		var m errdetails.ErrorInfo
		if err := proto.Unmarshal(d.GetValue(), &m); err != nil {
			return nil, err
		}
		if m.GetReason() != "" {
			b = append(b, `,"reason":`...)
			b = appendJSONString(b, m.GetReason())
		}
		if m.GetDomain() != "" {
			b = append(b, `,"domain":`...)
			b = appendJSONString(b, m.GetDomain())
		}
		if len(m.GetMetadata()) > 0 {
			b = append(b, `,"metadata":{`...)
			for i, k := range slices.Sorted(maps.Keys(m.GetMetadata())) {
				if i > 0 {
					b = append(b, ',')
				}
				b = appendJSONString(b, k)
				b = append(b, ':')
				b = appendJSONString(b, m.GetMetadata()[k])
			}
			b = append(b, '}')
		}
	case badRequestURL:
		var m errdetails.BadRequest
		if err := proto.Unmarshal(d.GetValue(), &m); err != nil {
			return nil, err
		}
		if len(m.GetFieldViolations()) > 0 {
			b = append(b, `,"fieldViolations":[`...)
			for i, v := range m.GetFieldViolations() {
				if i > 0 {
					b = append(b, ',')
				}
				// Only the two fields the edge sets; a violation with
				// others goes to protojson.
				if v.GetReason() != "" || v.GetLocalizedMessage() != nil {
					return nil, errUnknownDetail
				}
				b = append(b, '{')
				if v.GetField() != "" {
					b = append(b, `"field":`...)
					b = appendJSONString(b, v.GetField())
				}
				if v.GetDescription() != "" {
					if v.GetField() != "" {
						b = append(b, ',')
					}
					b = append(b, `"description":`...)
					b = appendJSONString(b, v.GetDescription())
				}
				b = append(b, '}')
			}
			b = append(b, ']')
		}
	default:
		return nil, errUnknownDetail
	}
	return append(b, '}'), nil
}

// appendDurationJSON writes a Duration as protojson does: seconds with
// 0, 3, 6 or 9 decimals and an "s".
func appendDurationJSON(b []byte, d *durationpb.Duration) []byte {
	secs, nanos := d.GetSeconds(), d.GetNanos()
	b = append(b, '"')
	if secs < 0 || nanos < 0 {
		b = append(b, '-')
		secs, nanos = -secs, -nanos
	}
	b = strconv.AppendInt(b, secs, 10)
	if nanos != 0 {
		frac := strconv.Itoa(int(nanos) + 1e9)[1:] // nine digits
		for strings.HasSuffix(frac, "000") {
			frac = frac[:len(frac)-3]
		}
		b = append(b, '.')
		b = append(b, frac...)
	}
	return append(b, `s"`...)
}

// Package protoutf8 keeps invalid UTF-8 in request strings a client error
// (INVALID_ARGUMENT naming the field) although the public API is proto3,
// whose strings must be valid UTF-8
// (docs/decisions/0009-proto3-for-the-public-api.md).
//
// Two places would otherwise answer INTERNAL before the gateway's
// validation could name the field:
//
//   - grpc-go's server parses a request with protobuf-go, which refuses a
//     proto3 string holding invalid UTF-8, and answers any parse failure
//     INTERNAL. ServerCodec parses such a request again without the check,
//     so that it reaches the handler's validation as it did when the API was
//     edition 2023 with utf8_validation = NONE.
//   - grpc-gateway fills path and query parameters (GET
//     /v1/documents/{document_id}, ?page_token=) from the URL without the
//     check, and protobuf-go then refuses to marshal the message on the
//     gateway's loopback connection (INTERNAL, a 500).
//     UnaryClientInterceptor, on that connection, answers INVALID_ARGUMENT
//     naming the field instead. JSON bodies never get that far: protojson
//     refuses invalid UTF-8 itself.
package protoutf8

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"unicode/utf8"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/morphik-org/colpali-gateway/internal/errclass"
)

// Violations lists m's string fields (nested messages, lists and maps
// included) whose value is not valid UTF-8, named the way the gateway's
// validation names fields: "queries[1]", "filters[0].values[2]",
// "header.idempotency_key", and a map as "metadata" with the key in the
// description. Order is field-number order, map keys sorted.
func Violations(m proto.Message) []errclass.FieldViolation {
	var out []errclass.FieldViolation
	walk(m.ProtoReflect(), "", &out)
	return out
}

func walk(m protoreflect.Message, prefix string, out *[]errclass.FieldViolation) {
	fields := m.Descriptor().Fields()
	for i := range fields.Len() {
		fd := fields.Get(i)
		if !m.Has(fd) {
			continue
		}
		name := prefix + string(fd.Name())
		v := m.Get(fd)
		switch {
		case fd.IsMap():
			mapViolations(fd, v.Map(), name, out)
		case fd.IsList():
			list := v.List()
			for j := range list.Len() {
				value(fd, list.Get(j), fmt.Sprintf("%s[%d]", name, j), out)
			}
		default:
			value(fd, v, name, out)
		}
	}
}

func value(fd protoreflect.FieldDescriptor, v protoreflect.Value, name string, out *[]errclass.FieldViolation) {
	switch fd.Kind() {
	case protoreflect.StringKind:
		if !utf8.ValidString(v.String()) {
			*out = append(*out, errclass.FieldViolation{Field: name, Description: "is not valid UTF-8"})
		}
	case protoreflect.MessageKind, protoreflect.GroupKind:
		walk(v.Message(), name+".", out)
	}
}

func mapViolations(fd protoreflect.FieldDescriptor, m protoreflect.Map, name string, out *[]errclass.FieldViolation) {
	keyKind, valueFD := fd.MapKey().Kind(), fd.MapValue()
	var descs []string
	m.Range(func(k protoreflect.MapKey, v protoreflect.Value) bool {
		if keyKind == protoreflect.StringKind && !utf8.ValidString(k.String()) {
			descs = append(descs, fmt.Sprintf("key %q is not valid UTF-8", k.String()))
		}
		switch valueFD.Kind() {
		case protoreflect.StringKind:
			if !utf8.ValidString(v.String()) {
				descs = append(descs, fmt.Sprintf("value of key %q is not valid UTF-8", k.String()))
			}
		case protoreflect.MessageKind:
			walk(v.Message(), fmt.Sprintf("%s[%q].", name, k.String()), out)
		}
		return true
	})
	if len(descs) == 0 {
		return
	}
	slices.Sort(descs) // map order is random; the answer should not be
	*out = append(*out, errclass.FieldViolation{Field: name, Description: strings.Join(descs, "; ")})
}

// UnaryClientInterceptor refuses a request holding invalid UTF-8 with
// INVALID_ARGUMENT and a BadRequest detail naming every such field, before
// grpc-go tries to marshal it. Requests that are not protobuf messages pass.
func UnaryClientInterceptor() grpc.UnaryClientInterceptor {
	return func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		if m, ok := req.(proto.Message); ok {
			if vs := Violations(m); len(vs) > 0 {
				return statusOf(vs)
			}
		}
		return invoker(ctx, method, req, reply, cc, opts...)
	}
}

// statusOf builds the status here rather than at the gateway's edge: this
// error is returned by the loopback client straight to grpc-gateway, which
// renders any gRPC status it gets, and never passes the server interceptors.
func statusOf(vs []errclass.FieldViolation) error {
	fe := &errclass.FieldError{Violations: vs}
	st := status.New(codes.InvalidArgument, fe.Error())
	br := &errdetails.BadRequest{}
	for _, v := range vs {
		br.FieldViolations = append(br.FieldViolations, &errdetails.BadRequest_FieldViolation{Field: v.Field, Description: v.Description})
	}
	if withDetails, err := st.WithDetails(br); err == nil {
		st = withDetails
	}
	return st.Err()
}

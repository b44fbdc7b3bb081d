package protoutf8

import (
	"errors"
	"fmt"
	"sync"

	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/dynamicpb"
)

// ServerCodec is grpc-go's protobuf codec, except that a request it refuses
// only because a string field holds invalid UTF-8 is parsed again without
// that check, so that it reaches the handler's validation and is answered
// INVALID_ARGUMENT naming the field. grpc-go answers any codec error with
// INTERNAL ("failed to unmarshal"), before interceptors or handlers run, and
// a proto3 message cannot be told to skip the check; so the second parse
// goes through a copy of the message's descriptor in edition 2023 with
// utf8_validation = NONE (dynamicpb), and the result is copied into the
// request field by field. Valid requests take the default path unchanged;
// the second parse runs only after a failure.
//
// Install it with grpc.ForceServerCodecV2(protoutf8.NewServerCodec()).
type ServerCodec struct {
	encoding.CodecV2
	lenient sync.Map // protoreflect.FullName -> lenientEntry
}

type lenientEntry struct {
	mt  protoreflect.MessageType
	err error
}

// NewServerCodec wraps grpc-go's registered "proto" codec.
func NewServerCodec() *ServerCodec {
	return &ServerCodec{CodecV2: encoding.GetCodecV2("proto")}
}

// Unmarshal parses data into v, accepting invalid UTF-8 in strings.
func (c *ServerCodec) Unmarshal(data mem.BufferSlice, v any) error {
	err := c.CodecV2.Unmarshal(data, v)
	if err == nil {
		return nil
	}
	m, ok := v.(proto.Message)
	if !ok {
		return err
	}
	mt, lerr := c.lenientType(m.ProtoReflect().Descriptor())
	if lerr != nil {
		return err
	}
	lenient := mt.New().Interface()
	if proto.Unmarshal(data.Materialize(), lenient) != nil {
		return err // malformed for other reasons: grpc-go's answer stands
	}
	proto.Reset(m)
	copyInto(m.ProtoReflect(), lenient.ProtoReflect())
	if len(Violations(m)) == 0 {
		return err // not a UTF-8 problem after all
	}
	return nil
}

func (c *ServerCodec) lenientType(md protoreflect.MessageDescriptor) (protoreflect.MessageType, error) {
	if e, ok := c.lenient.Load(md.FullName()); ok {
		return e.(lenientEntry).mt, e.(lenientEntry).err
	}
	mt, err := newLenientType(md)
	c.lenient.Store(md.FullName(), lenientEntry{mt, err})
	return mt, err
}

// newLenientType builds md's message type from a copy of its file rewritten
// as edition 2023 with proto3's semantics and no UTF-8 validation.
func newLenientType(md protoreflect.MessageDescriptor) (protoreflect.MessageType, error) {
	file := md.ParentFile()
	if file.Syntax() != protoreflect.Proto3 {
		return nil, fmt.Errorf("%s: not proto3", file.Path())
	}
	fdp := protodesc.ToFileDescriptorProto(file)
	fdp.Syntax = proto.String("editions")
	fdp.Edition = descriptorpb.Edition_EDITION_2023.Enum()
	if fdp.Options == nil {
		fdp.Options = &descriptorpb.FileOptions{}
	}
	fdp.Options.Features = &descriptorpb.FeatureSet{
		FieldPresence:  descriptorpb.FeatureSet_IMPLICIT.Enum(),
		Utf8Validation: descriptorpb.FeatureSet_NONE.Enum(),
	}
	for _, m := range fdp.MessageType {
		if err := toEditions(m); err != nil {
			return nil, err
		}
	}
	lf, err := protodesc.NewFile(fdp, protoregistry.GlobalFiles)
	if err != nil {
		return nil, err
	}
	var files protoregistry.Files
	if err := files.RegisterFile(lf); err != nil {
		return nil, err
	}
	d, err := files.FindDescriptorByName(md.FullName())
	if err != nil {
		return nil, err
	}
	lmd, ok := d.(protoreflect.MessageDescriptor)
	if !ok {
		return nil, errors.New("not a message")
	}
	return dynamicpb.NewMessageType(lmd), nil
}

// toEditions rewrites what proto3 expresses differently from editions: an
// `optional` field (explicit presence, through a synthetic oneof) and the
// `packed` option.
func toEditions(m *descriptorpb.DescriptorProto) error {
	synthetic := map[int32]bool{}
	for _, f := range m.Field {
		if f.GetProto3Optional() {
			synthetic[f.GetOneofIndex()] = true
			f.Proto3Optional, f.OneofIndex = nil, nil
			if f.Options == nil {
				f.Options = &descriptorpb.FieldOptions{}
			}
			f.Options.Features = &descriptorpb.FeatureSet{FieldPresence: descriptorpb.FeatureSet_EXPLICIT.Enum()}
		}
		if f.Options != nil && f.Options.Packed != nil {
			if !f.Options.GetPacked() {
				if f.Options.Features == nil {
					f.Options.Features = &descriptorpb.FeatureSet{}
				}
				f.Options.Features.RepeatedFieldEncoding = descriptorpb.FeatureSet_EXPANDED.Enum()
			}
			f.Options.Packed = nil
		}
	}
	// protoc puts synthetic oneofs after the real ones.
	for i := range m.OneofDecl {
		if synthetic[int32(i)] {
			m.OneofDecl = m.OneofDecl[:i]
			break
		}
	}
	for _, nested := range m.NestedType {
		if err := toEditions(nested); err != nil {
			return err
		}
	}
	return nil
}

// copyInto copies src into dst, field by field by number: the two messages
// have the same fields, from two descriptors of one message.
func copyInto(dst, src protoreflect.Message) {
	fields := dst.Descriptor().Fields()
	src.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		dfd := fields.ByNumber(fd.Number())
		switch {
		case fd.IsList():
			dl, sl := dst.Mutable(dfd).List(), v.List()
			for i := range sl.Len() {
				if fd.Message() != nil {
					e := dl.NewElement()
					copyInto(e.Message(), sl.Get(i).Message())
					dl.Append(e)
				} else {
					dl.Append(sl.Get(i))
				}
			}
		case fd.IsMap():
			dm := dst.Mutable(dfd).Map()
			v.Map().Range(func(k protoreflect.MapKey, mv protoreflect.Value) bool {
				if fd.MapValue().Message() != nil {
					e := dm.NewValue()
					copyInto(e.Message(), mv.Message())
					mv = e
				}
				dm.Set(k, mv)
				return true
			})
		case fd.Message() != nil:
			copyInto(dst.Mutable(dfd).Message(), v.Message())
		default:
			dst.Set(dfd, v)
		}
		return true
	})
	if u := src.GetUnknown(); len(u) > 0 {
		dst.SetUnknown(u)
	}
}

package gateway

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"google.golang.org/grpc"
	"google.golang.org/grpc/status"

	colpaliv1 "github.com/morphik-org/colpali-gateway/gen/colpali/v1"
	"github.com/morphik-org/colpali-gateway/ingest"
)

// The two ingestion RPCs are adapters over ingest.Service: they validate
// what the client sent, hand the pipeline a header and a page iterator, and
// turn its progress into messages. The pipeline's errors go to the edge
// (status.go) as they are.

// streamInFlight is the stream's ingest.Document.InFlight: with one group
// embedding or waiting while the last is stored and the next is received, a
// stream holds at most three groups of pages.
const streamInFlight = 2

func (s *documentService) IngestDocument(ctx context.Context, req *colpaliv1.IngestDocumentRequest) (*colpaliv1.IngestDocumentResponse, error) {
	if err := s.validateIngest(ctx, req); err != nil {
		return nil, err
	}
	tenant, err := tenantOf(ctx)
	if err != nil {
		return nil, err
	}
	pages := req.GetPages()
	if err := chargePages(ctx, s.quotas, len(pages)); err != nil {
		return nil, err
	}
	doc, created, err := s.ingest.Ingest(ctx, ingest.Document{
		Tenant: tenant, IdempotencyKey: req.GetIdempotencyKey(), Metadata: req.GetMetadata(),
		RequestDigest: pagesDigest(pages),
		PageCount:     len(pages),
		Check:         storageCheck(s.quotas, tenant, len(pages)),
		Next: func(context.Context) ([]byte, error) {
			if len(pages) == 0 {
				return nil, io.EOF
			}
			img := pages[0].GetImage()
			pages = pages[1:]
			return img, nil
		},
		Logger: Logger(ctx, s.logger),
	})
	if err != nil {
		return nil, err
	}
	return &colpaliv1.IngestDocumentResponse{Document: documentProto(doc), Created: created}, nil
}

// ingestStream is the server side of IngestDocumentStream.
type ingestStream = grpc.BidiStreamingServer[colpaliv1.IngestDocumentStreamRequest, colpaliv1.IngestDocumentStreamResponse]

// IngestDocumentStream: see the proto. Pages are embedded and stored in
// groups of Config.MaxImages as they arrive; the first message after the
// header carries the document id, one follows every stored group, and the
// last carries the committed document.
func (s *documentService) IngestDocumentStream(stream ingestStream) error {
	ctx := stream.Context()
	recv, stop := receive(stream)
	defer stop()
	first, err := recv(ctx)
	if errors.Is(err, io.EOF) {
		var v violations
		v.add("header", "the stream ended before its header")
		return v.err()
	}
	if err != nil {
		return recvError(err, "header")
	}
	if err := s.validateHeader(first); err != nil {
		return err
	}
	tenant, err := tenantOf(ctx)
	if err != nil {
		return err
	}
	header := first.GetHeader()
	want := int(header.GetPageCount())
	n := 0
	doc, created, err := s.ingest.Ingest(ctx, ingest.Document{
		Tenant: tenant, IdempotencyKey: header.GetIdempotencyKey(), Metadata: header.GetMetadata(),
		// The pages come later, so a stream's digest is its announced length.
		RequestDigest: fmt.Appendf(nil, "stream of %d pages", want),
		PageCount:     want,
		Check:         storageCheck(s.quotas, tenant, want),
		Next: func(ctx context.Context) ([]byte, error) {
			n++
			msg, err := recv(ctx)
			if errors.Is(err, io.EOF) {
				var v violations
				v.add("header.page_count", "announced %d pages, but the stream ended after %d; nothing was kept", want, n-1)
				return nil, v.err()
			}
			if err != nil {
				return nil, recvError(err, fmt.Sprintf("page %d", n))
			}
			if err := s.validatePageMessage(ctx, msg, n); err != nil {
				return nil, err
			}
			// A stream's pages are counted as they come: the whole
			// document may be larger than the page burst.
			if err := chargePages(ctx, s.quotas, 1); err != nil {
				return nil, err
			}
			return msg.GetPage().GetImage(), nil
		},
		Progress: func(p ingest.Progress) error {
			return stream.Send(&colpaliv1.IngestDocumentStreamResponse{Progress: progressProto(p)})
		},
		InFlight: streamInFlight,
		Logger:   Logger(ctx, s.logger),
	})
	if err != nil {
		return err
	}
	// A retry of a stored document reports it whole; no page was read.
	final := ingest.Progress{DocumentID: doc.ID, PagesReceived: doc.PageCount, PagesStored: doc.PageCount, PageCount: doc.PageCount}
	return stream.Send(&colpaliv1.IngestDocumentStreamResponse{Progress: progressProto(final), Document: documentProto(doc), Created: created})
}

func progressProto(p ingest.Progress) *colpaliv1.IngestProgress {
	return &colpaliv1.IngestProgress{
		DocumentId: p.DocumentID, PagesReceived: int32(p.PagesReceived), PagesStored: int32(p.PagesStored), PageCount: int32(p.PageCount), // #nosec G115 -- page counts are bounded by MaxStreamPages, far below 2^31
	}
}

// receiveFunc returns the stream's next message, or ctx's error once ctx
// ends.
type receiveFunc func(ctx context.Context) (*colpaliv1.IngestDocumentStreamRequest, error)

// receive reads the stream's messages in a goroutine of its own, so that
// the handler can give up waiting when ctx ends: stream.Recv follows the
// transport, not ctx, and a stalled client would otherwise hold the handler
// past the deadline the interceptor set. The goroutine ends at the first
// error; stop lets it go without delivering its last message, and grpc-go
// ends its pending Recv once the handler has returned. One message at a time
// is in flight, so memory stays bounded.
func receive(stream ingestStream) (recv receiveFunc, stop func()) {
	type result struct {
		msg *colpaliv1.IngestDocumentStreamRequest
		err error
	}
	results := make(chan result)
	done := make(chan struct{})
	go func() {
		for {
			msg, err := stream.Recv()
			select {
			case results <- result{msg, err}:
			case <-done:
				return
			}
			if err != nil {
				return
			}
		}
	}()
	recv = func(ctx context.Context) (*colpaliv1.IngestDocumentStreamRequest, error) {
		select {
		case r := <-results:
			return r.msg, r.err
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return recv, func() { close(done) }
}

// recvError is the error of a failed Recv other than the stream's end. A
// transport error that grpc-go reports as a status (a message over the size
// limit) keeps its code, naming what was being received; the call's own end
// (client cancel, deadline) is the edge's to map.
func recvError(err error, what string) error {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	if st, ok := status.FromError(err); ok {
		return status.Errorf(st.Code(), "receiving %s: %s", what, st.Message())
	}
	return fmt.Errorf("receiving %s: %w", what, err)
}

// pagesDigest identifies a unary ingestion's pages (SHA-256 over each
// image, length-prefixed), so that an idempotency key reused with other
// pages is told from a retry of the same request.
func pagesDigest(pages []*colpaliv1.Page) []byte {
	h := sha256.New()
	for _, p := range pages {
		var n [8]byte
		binary.LittleEndian.PutUint64(n[:], uint64(len(p.GetImage())))
		h.Write(n[:])
		h.Write(p.GetImage())
	}
	return h.Sum(nil)
}

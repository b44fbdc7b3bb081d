// Package bulkingest is `gateway ingest`: it ingests a folder of page
// images, one document per sub-folder or per group of files, through the
// gateway's IngestDocumentStream, with progress and a summary.
//
// Each document's idempotency key is derived from its content (see
// IdempotencyKey), so running the command again after a crash or a Ctrl-C
// skips every document already stored: the gateway answers a known key
// from its header, before any page is sent or embedded. An interrupted
// document was never committed (the gateway aborts a stream that ends
// early), so nothing half-ingested is left behind.
package bulkingest

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net"
	"os"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	colpaliv1 "github.com/morphik-org/colpali-gateway/gen/colpali/v1"
	"github.com/morphik-org/colpali-gateway/internal/cli"
)

// Config is the command line of `gateway ingest`.
type Config struct {
	// Dir is the folder to ingest (the one argument).
	Dir string
	// Addr is the gateway's gRPC address. Default 127.0.0.1:9090.
	Addr string
	// APIKey is sent as "authorization: Bearer <key>" when set.
	APIKey string
	// TLS dials with TLS, trusting CAFile (or the system's roots), and
	// checking ServerName (or the address's host).
	TLS        bool
	CAFile     string
	ServerName string
	// Parallel is how many documents stream at once. Default 2: one is
	// embedded while the other's pages are read and sent.
	Parallel int
	// DocumentTimeout bounds one document's stream. Default 30m.
	DocumentTimeout time.Duration
	// MaxMessageBytes bounds one message either way; a page must fit.
	// Default 64 MiB.
	MaxMessageBytes int
}

func (c *Config) register(fs *flag.FlagSet) {
	fs.StringVar(&c.Addr, "addr", "127.0.0.1:9090", "the gateway's gRPC address")
	fs.StringVar(&c.APIKey, "api-key", "", "API key, sent as a bearer token (or COLPALI_API_KEY)")
	fs.BoolVar(&c.TLS, "tls", false, "dial with TLS")
	fs.StringVar(&c.CAFile, "tls-ca-file", "", "PEM CA bundle to trust with -tls (default: the system's roots)")
	fs.StringVar(&c.ServerName, "tls-server-name", "", "name to verify in the gateway's certificate (default: the host of -addr)")
	fs.IntVar(&c.Parallel, "parallel", 2, "documents streamed at once")
	fs.DurationVar(&c.DocumentTimeout, "document-timeout", 30*time.Minute, "longest one document's stream may take")
	fs.IntVar(&c.MaxMessageBytes, "max-message-bytes", 64<<20, "largest gRPC message either way; every page must fit")
}

func (c Config) validate() error {
	var errs []error
	if c.Dir == "" {
		errs = append(errs, errors.New("want the folder to ingest as the one argument"))
	}
	if c.Addr == "" {
		errs = append(errs, errors.New("-addr: required"))
	}
	if c.Parallel <= 0 {
		errs = append(errs, fmt.Errorf("-parallel %d: must be positive", c.Parallel))
	}
	if c.DocumentTimeout <= 0 {
		errs = append(errs, fmt.Errorf("-document-timeout %v: must be positive", c.DocumentTimeout))
	}
	if c.MaxMessageBytes <= 0 {
		errs = append(errs, fmt.Errorf("-max-message-bytes %d: must be positive", c.MaxMessageBytes))
	}
	if c.CAFile != "" && !c.TLS {
		errs = append(errs, errors.New("-tls-ca-file needs -tls"))
	}
	return errors.Join(errs...)
}

// Usage is the first line of `gateway ingest -help`.
const Usage = "Usage: gateway ingest [flags] FOLDER\n\n" +
	"Ingests every document in FOLDER through IngestDocumentStream: each sub-folder's\n" +
	"images (PNG, JPEG; pages in name order, numbers compared as numbers) are one\n" +
	"document, with metadata from its metadata.json (a JSON object of strings); images\n" +
	"directly in FOLDER are grouped by name without a trailing page number\n" +
	"(report-001.png, report-002.png: \"report\", metadata from report.json). Keys come\n" +
	"from the content, so a second run skips what is stored. Flags may also be set\n" +
	"by COLPALI_<FLAG> variables.\n\nFlags:\n"

// Run is `gateway ingest`: args are the arguments after "ingest". Progress
// goes to stderr (a bar on a terminal, a line per document otherwise), the
// summary to stdout. It returns an error when any document failed or ctx
// ended first.
func Run(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) error {
	var cfg Config
	fs := flag.NewFlagSet("gateway ingest", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(fs.Output(), Usage); fs.PrintDefaults() }
	cfg.register(fs)
	// The folder comes last; cli.Parse takes flags only.
	if n := len(args); n > 0 && !strings.HasPrefix(args[n-1], "-") && (n == 1 || !takesValue(fs, args[n-2])) {
		cfg.Dir, args = args[n-1], args[:n-1]
	}
	if err := cli.Parse(fs, args, "COLPALI_", getenv); err != nil {
		return err
	}
	if err := cfg.validate(); err != nil {
		return err
	}
	docs, err := Scan(cfg.Dir)
	if err != nil {
		return err
	}
	conn, err := dial(cfg)
	if err != nil {
		return err
	}
	defer conn.Close()
	if cfg.APIKey != "" {
		ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+cfg.APIKey)
	}
	rep := newReporter(stderr, isTerminal(stderr), docs)
	sum := ingestAll(ctx, colpaliv1.NewDocumentServiceClient(conn), cfg, docs, rep)
	rep.finish()
	sum.print(stdout)
	switch {
	case ctx.Err() != nil:
		return fmt.Errorf("interrupted: %d documents not finished (nothing half-ingested is kept; run again to resume)", sum.interrupted+sum.notStarted)
	case len(sum.failed) > 0:
		return fmt.Errorf("%d of %d documents failed", len(sum.failed), len(docs))
	}
	return nil
}

// takesValue reports whether arg is a flag that takes the next argument as
// its value ("-addr host:port"), so that the value is not read as the
// folder.
func takesValue(fs *flag.FlagSet, arg string) bool {
	name := strings.TrimLeft(arg, "-")
	if !strings.HasPrefix(arg, "-") || strings.Contains(name, "=") {
		return false
	}
	f := fs.Lookup(name)
	if f == nil {
		return false
	}
	b, ok := f.Value.(interface{ IsBoolFlag() bool })
	return !ok || !b.IsBoolFlag()
}

func dial(cfg Config) (*grpc.ClientConn, error) {
	creds := insecure.NewCredentials()
	if cfg.TLS {
		tc := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: cfg.ServerName}
		if tc.ServerName == "" {
			if host, _, err := net.SplitHostPort(cfg.Addr); err == nil {
				tc.ServerName = host
			}
		}
		if cfg.CAFile != "" {
			pem, err := os.ReadFile(cfg.CAFile)
			if err != nil {
				return nil, err
			}
			tc.RootCAs = x509.NewCertPool()
			if !tc.RootCAs.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("-tls-ca-file %s: no PEM certificate in it", cfg.CAFile)
			}
		}
		creds = credentials.NewTLS(tc)
	}
	return grpc.NewClient(cfg.Addr, grpc.WithTransportCredentials(creds),
		grpc.WithDefaultCallOptions(grpc.MaxCallSendMsgSize(cfg.MaxMessageBytes), grpc.MaxCallRecvMsgSize(cfg.MaxMessageBytes)))
}

// outcome is one document's end.
type outcome struct {
	doc     Document
	created bool
	id      string
	err     error
}

// summary counts the outcomes.
type summary struct {
	stored, skipped, pagesStored int
	failed                       []outcome
	// interrupted were streaming when ctx ended; notStarted never began.
	interrupted, notStarted int
}

func (s summary) print(w io.Writer) {
	fmt.Fprintf(w, "stored %d documents (%d pages), skipped %d already stored, failed %d", s.stored, s.pagesStored, s.skipped, len(s.failed))
	if s.interrupted+s.notStarted > 0 {
		fmt.Fprintf(w, ", interrupted %d, not started %d", s.interrupted, s.notStarted)
	}
	fmt.Fprintln(w)
	for _, o := range s.failed {
		fmt.Fprintf(w, "  failed %s: %v\n", o.doc.Name, o.err)
	}
}

// ingestAll streams docs, cfg.Parallel at a time, until all are done or
// ctx ends.
func ingestAll(ctx context.Context, client colpaliv1.DocumentServiceClient, cfg Config, docs []Document, rep *reporter) summary {
	work := make(chan Document)
	results := make(chan outcome)
	var wg sync.WaitGroup
	for range min(cfg.Parallel, max(len(docs), 1)) {
		wg.Go(func() {
			for d := range work {
				results <- ingestOne(ctx, client, cfg.DocumentTimeout, d, rep)
			}
		})
	}
	go func() {
		defer close(work)
		for _, d := range docs {
			select {
			case work <- d:
			case <-ctx.Done():
				return
			}
		}
	}()
	go func() { wg.Wait(); close(results) }()

	var sum summary
	done := 0
	for o := range results {
		done++
		rep.documentDone(o)
		switch {
		case o.err != nil && ctx.Err() != nil:
			sum.interrupted++
		case o.err != nil:
			sum.failed = append(sum.failed, o)
		case o.created:
			sum.stored++
			sum.pagesStored += len(o.doc.Pages)
		default:
			sum.skipped++
		}
	}
	sum.notStarted = len(docs) - done
	return sum
}

// ingestOne streams one document: the header, then its pages one message
// each, while reading progress; a known key is answered after the header
// and its pages are not sent.
func ingestOne(ctx context.Context, client colpaliv1.DocumentServiceClient, timeout time.Duration, d Document, rep *reporter) outcome {
	out := outcome{doc: d}
	if ctx.Err() != nil {
		out.err = ctx.Err()
		return out
	}
	key, err := IdempotencyKey(d)
	if err != nil {
		out.err = err
		return out
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel() // ends the stream, and so the sender, on every path
	stream, err := client.IngestDocumentStream(ctx)
	if err != nil {
		out.err = err
		return out
	}
	sendErr := make(chan error, 1)
	go func() {
		err := sendPages(stream, d, key)
		if err != nil && !errors.Is(err, io.EOF) {
			cancel() // a page that cannot be read: end the stream, nothing is kept
		}
		sendErr <- err
	}()

	sent := 0
	for {
		resp, err := stream.Recv()
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = errors.New("the gateway closed the stream without the document")
			}
			// A local failure to read a page explains the stream's end
			// better than the cancellation it caused.
			if ctx.Err() != nil {
				// The stream was cancelled: by a page read failure (whose
				// sender has then reported it) or by the caller.
				// The sender ends promptly: its Send fails once the
				// stream is cancelled.
				if serr := <-sendErr; serr != nil && !errors.Is(serr, io.EOF) {
					err = serr
				}
			}
			out.err = describe(err)
			return out
		}
		if p := resp.GetProgress(); p != nil {
			rep.pagesStored(d.Name, int(p.GetPagesStored())-sent)
			sent = int(p.GetPagesStored())
		}
		if doc := resp.GetDocument(); doc != nil {
			out.created, out.id = resp.GetCreated(), doc.GetDocumentId()
			if !out.created {
				rep.pagesStored(d.Name, len(d.Pages)-sent)
			}
			return out
		}
	}
}

// sendPages sends the header and then each page, reading one file at a
// time. io.EOF from Send means the gateway has answered (a known key) or
// failed; the receiver reads why.
func sendPages(stream grpc.BidiStreamingClient[colpaliv1.IngestDocumentStreamRequest, colpaliv1.IngestDocumentStreamResponse], d Document, key string) error {
	header := &colpaliv1.IngestDocumentStreamRequest{Message: &colpaliv1.IngestDocumentStreamRequest_Header{
		Header: &colpaliv1.IngestDocumentHeader{Metadata: d.Metadata, IdempotencyKey: key, PageCount: int32(min(len(d.Pages), math.MaxInt32))}, // #nosec G115 -- clamped; the gateway refuses more than its -max-stream-pages anyway
	}}
	if err := stream.Send(header); err != nil {
		return err
	}
	for _, p := range d.Pages {
		img, err := os.ReadFile(p) // #nosec G304 -- a page of the operator's own folder
		if err != nil {
			return err
		}
		if err := stream.Send(&colpaliv1.IngestDocumentStreamRequest{Message: &colpaliv1.IngestDocumentStreamRequest_Page{Page: &colpaliv1.Page{Image: img}}}); err != nil {
			return err
		}
	}
	return stream.CloseSend()
}

// describe keeps a status's code and message, which name the field and the
// limit, without grpc-go's "rpc error:" prefix.
func describe(err error) error {
	if st, ok := status.FromError(err); ok {
		return fmt.Errorf("%s: %s", st.Code(), st.Message())
	}
	return err
}

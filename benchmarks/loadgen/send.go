package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	colpaliv1 "github.com/morphik-org/colpali-gateway/gen/colpali/v1"
)

// sender makes one call of kind with the payload-th prepared payload and
// returns its outcome as a gRPC code name ("OK" on success). REST answers
// are mapped to the same names from the error body's code, so that the two
// protocols' reports compare; an answer without one is "HTTP <status>".
type sender interface {
	send(ctx context.Context, kind string, payload int) string
	close()
}

// checkLoopback refuses any target host that is not a loopback address:
// the load generator is for benchmarks on this machine only.
func checkLoopback(ctx context.Context, host string) error {
	if ip := net.ParseIP(host); ip != nil {
		if !ip.IsLoopback() {
			return fmt.Errorf("target host %s is not a loopback address: loadgen sends to this machine only", host)
		}
		return nil
	}
	addrs, err := net.DefaultResolver.LookupIPAddr(ctx, host)
	if err != nil {
		return fmt.Errorf("target host %q: %w", host, err)
	}
	for _, a := range addrs {
		if !a.IP.IsLoopback() {
			return fmt.Errorf("target host %q resolves to %s, not a loopback address: loadgen sends to this machine only", host, a.IP)
		}
	}
	if len(addrs) == 0 {
		return fmt.Errorf("target host %q resolves to nothing", host)
	}
	return nil
}

// maxMessageSize bounds gRPC responses: 16 FP32 pages of embeddings are
// ~8.4 MB, past grpc-go's 4 MiB default.
const maxMessageSize = 256 << 20

type grpcSender struct {
	conn    *grpc.ClientConn
	client  colpaliv1.EmbeddingServiceClient
	queries [][]string
	images  [][][]byte
}

func newGRPCSender(addr string, queries [][]string, images [][][]byte) (*grpcSender, error) {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxMessageSize)))
	if err != nil {
		return nil, err
	}
	return &grpcSender{conn: conn, client: colpaliv1.NewEmbeddingServiceClient(conn), queries: queries, images: images}, nil
}

func (g *grpcSender) send(ctx context.Context, kind string, payload int) string {
	var err error
	if kind == kindImage {
		_, err = g.client.EmbedImages(ctx, &colpaliv1.EmbedImagesRequest{Images: g.images[payload]})
	} else {
		_, err = g.client.EmbedQueries(ctx, &colpaliv1.EmbedQueriesRequest{Queries: g.queries[payload]})
	}
	return status.Code(err).String()
}

func (g *grpcSender) close() { g.conn.Close() }

type restSender struct {
	client *http.Client
	base   string
	bodies map[string][][]byte // pre-encoded JSON, by kind
}

func newRESTSender(base string, queries [][]string, images [][][]byte) (*restSender, error) {
	r := &restSender{
		// Open loop: as many connections as calls in flight.
		client: &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1024, IdleConnTimeout: 30 * time.Second}},
		base:   strings.TrimSuffix(base, "/"),
		bodies: map[string][][]byte{},
	}
	for _, q := range queries {
		b, err := json.Marshal(map[string]any{"queries": q})
		if err != nil {
			return nil, err
		}
		r.bodies[kindQuery] = append(r.bodies[kindQuery], b)
	}
	for _, pages := range images {
		b, err := json.Marshal(map[string]any{"images": pages}) // []byte marshals as base64, as the API wants
		if err != nil {
			return nil, err
		}
		r.bodies[kindImage] = append(r.bodies[kindImage], b)
	}
	return r, nil
}

func (r *restSender) send(ctx context.Context, kind string, payload int) string {
	path := "/v1/queries:embed"
	if kind == kindImage {
		path = "/v1/images:embed"
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, r.base+path, bytes.NewReader(r.bodies[kind][payload]))
	if err != nil {
		return codes.Internal.String()
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := r.client.Do(req)
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			return codes.DeadlineExceeded.String()
		}
		if errors.Is(err, context.Canceled) {
			return codes.Canceled.String()
		}
		return "ConnectionError"
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusOK {
		_, _ = io.Copy(io.Discard, resp.Body) // reading it is part of the call
		return codes.OK.String()
	}
	var body struct {
		Code *int `json:"code"`
	}
	if b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20)); err == nil && json.Unmarshal(b, &body) == nil && body.Code != nil {
		return codes.Code(*body.Code).String()
	}
	return fmt.Sprintf("HTTP %d", resp.StatusCode)
}

func (r *restSender) close() { r.client.CloseIdleConnections() }

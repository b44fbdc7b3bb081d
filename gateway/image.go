package gateway

import (
	"context"
	"fmt"
	"strings"

	"github.com/morphik-org/colpali-gateway/internal/imagecheck"
)

// imageChecker checks encoded images against Config's limits, at most
// Config.MaxConcurrentDecodes at once across all calls. It is shared by the
// services; each call takes a budget (newBudget) for its images.
//
// The order matters against hostile input: the size and the header are
// read first (cheap, bounded by the file), the dimensions refused before
// any pixel data is touched, then the call's pixel budget, and only then
// does the image wait for a slot to have its data verified (package
// imagecheck: streamed, no bitmap, CPU bounded by the pixel limit).
type imageChecker struct {
	cfg   Config
	slots chan struct{}
}

func newImageChecker(cfg Config) *imageChecker {
	return &imageChecker{cfg: cfg, slots: make(chan struct{}, cfg.MaxConcurrentDecodes)}
}

// imageBudget checks the images of one call (or one stream message). It
// is not safe for concurrent use.
type imageBudget struct {
	c    *imageChecker
	ctx  context.Context
	left int64 // pixels the call's images may still have
	// err is the context's error if it ended while an image waited for a
	// slot; the images after it are not checked, and the call fails with it.
	err error
}

func (c *imageChecker) newBudget(ctx context.Context) *imageBudget {
	return &imageBudget{c: c, ctx: ctx, left: int64(c.cfg.MaxCallPixels)}
}

// check returns what is wrong with one encoded image, or "".
func (b *imageBudget) check(img []byte) string {
	if b.err != nil {
		return ""
	}
	cfg := b.c.cfg
	switch {
	case len(img) == 0:
		return "is empty; want a PNG or JPEG file"
	case len(img) > cfg.MaxImageBytes:
		return fmt.Sprintf("is %d bytes; the limit is %d bytes", len(img), cfg.MaxImageBytes)
	}
	info, err := imagecheck.Header(img)
	if err != nil {
		return strings.TrimPrefix(err.Error(), imagecheck.ErrHeader.Error()+": ")
	}
	px := info.Pixels()
	if px > int64(cfg.MaxImagePixels) {
		return fmt.Sprintf("is %dx%d = %d pixels; the limit is %d pixels", info.Width, info.Height, px, cfg.MaxImagePixels)
	}
	if px > b.left {
		return fmt.Sprintf("is %d pixels, past the call's budget: the images of one call may total %d pixels", px, cfg.MaxCallPixels)
	}
	b.left -= px
	select {
	case b.c.slots <- struct{}{}:
	case <-b.ctx.Done():
		b.err = b.ctx.Err()
		return ""
	}
	err = imagecheck.Verify(img, info)
	<-b.c.slots
	if err != nil {
		// The full decode is left to Triton: a header that is sound but
		// data that is not would otherwise fail there, failing the whole
		// batch (other callers' items too) without naming the item.
		return fmt.Sprintf("has a valid header but its image data cannot be decoded: %s", strings.TrimPrefix(err.Error(), imagecheck.ErrData.Error()+": "))
	}
	return ""
}

// done is the call's error: v's violations, or the context's error if it
// ended while an image waited.
func (b *imageBudget) done(v violations) error {
	if b.err != nil {
		return b.err
	}
	return v.err()
}

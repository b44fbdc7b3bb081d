package gateway

import (
	"context"
	"errors"
	"strings"
	"testing"

	colpaliv1 "github.com/morphik-org/colpali-gateway/gen/colpali/v1"
)

func TestCallPixelBudget(t *testing.T) {
	g := startGateway(t, Config{MaxImages: 3, MaxImagePixels: 100, MaxCallPixels: 150}, Deps{})
	img := pngImage(t, 10, 10) // 100 pixels: within the image limit
	_, err := g.client.EmbedImages(testContext(t), &colpaliv1.EmbedImagesRequest{Images: [][]byte{img, img}})
	checkInvalidArgument(t, err, []string{"images[1]"}, "the images of one call may total 150 pixels")
	if _, err := g.client.EmbedImages(testContext(t), &colpaliv1.EmbedImagesRequest{Images: [][]byte{img}}); err != nil {
		t.Errorf("one image within the budget: %v", err)
	}
}

// TestDecodeSlotWaitEndsWithTheCall: an image waiting for a check slot
// gives up when its call's context ends, and the call fails with the
// context's error rather than a verdict on the image.
func TestDecodeSlotWaitEndsWithTheCall(t *testing.T) {
	cfg := Config{MaxConcurrentDecodes: 1}.WithDefaults()
	c := newImageChecker(cfg)
	c.slots <- struct{}{} // another call holds the only slot
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	b := c.newBudget(ctx)
	if msg := b.check(pngImage(t, 4, 4)); msg != "" {
		t.Errorf("check = %q, want no verdict", msg)
	}
	if err := b.done(nil); !errors.Is(err, context.Canceled) {
		t.Errorf("done = %v, want context.Canceled", err)
	}
	<-c.slots
	b = c.newBudget(context.Background())
	if msg := b.check(pngImage(t, 4, 4)); msg != "" || b.done(nil) != nil || len(c.slots) != 0 {
		t.Errorf("with a free slot: %q, %v, %d slots held", msg, b.done(nil), len(c.slots))
	}
	if msg := b.check([]byte("\x89PNG\r\n\x1a\n" + strings.Repeat("x", 40))); !strings.Contains(msg, "cannot be read") {
		t.Errorf("a broken header: %q", msg)
	}
}

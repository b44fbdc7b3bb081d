// Command imagecheck measures what checking the worst images the gateway's
// limits allow costs: peak resident memory (VmHWM) and CPU time, for the
// check the gateway did before issue 11 (image.DecodeConfig, then a full
// image.Decode into a bitmap) and for the one it does now (package
// imagecheck: the header, then the data streamed without a bitmap, at most
// -slots at once). Each run is one process, so that VmHWM is its own.
//
//	go run ./benchmarks/imagecheck -check before -mpx 10 -images 1
//	go run ./benchmarks/imagecheck -check after -mpx 40 -images 16
//
// The image is a 16-bit RGBA PNG of one colour: a few hundred KB that
// expand to 8 bytes a pixel when decoded.
package main

import (
	"bufio"
	"bytes"
	"compress/zlib"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"hash/crc32"
	"image"
	_ "image/png" // the decoder the old check used
	"io"
	"math"
	"os"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/morphik-org/colpali-gateway/internal/imagecheck"
)

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "imagecheck:", err)
		os.Exit(1)
	}
}

func run(args []string, out io.Writer) error {
	fs := flag.NewFlagSet("imagecheck", flag.ContinueOnError)
	check := fs.String("check", "after", "before (DecodeConfig + full Decode, unbounded) or after (imagecheck, bounded)")
	mpx := fs.Float64("mpx", 10, "megapixels of the image (square)")
	images := fs.Int("images", 1, "images checked at once (one call's images, as the old check ran them in parallel calls)")
	slots := fs.Int("slots", runtime.GOMAXPROCS(0), "after: images whose data is checked at once (-max-concurrent-decodes)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	side := uint32(math.Sqrt(*mpx * 1e6))
	img := uniformPNG16(side, side)
	var checkOne func([]byte) error
	switch *check {
	case "before":
		checkOne = func(b []byte) error {
			if _, _, err := image.DecodeConfig(bytes.NewReader(b)); err != nil {
				return err
			}
			_, _, err := image.Decode(bytes.NewReader(b))
			return err
		}
	case "after":
		sem := make(chan struct{}, *slots)
		checkOne = func(b []byte) error {
			info, err := imagecheck.Header(b)
			if err != nil {
				return err
			}
			sem <- struct{}{}
			defer func() { <-sem }()
			return imagecheck.Verify(b, info)
		}
	default:
		return fmt.Errorf("-check %q: want before or after", *check)
	}
	runtime.GC()
	base, err := vmHWM()
	if err != nil {
		return err
	}
	cpu0 := cpuTime()
	start := time.Now()
	var wg sync.WaitGroup
	errs := make([]error, *images)
	for i := range *images {
		wg.Go(func() { errs[i] = checkOne(img) })
	}
	wg.Wait()
	wall := time.Since(start)
	cpu := cpuTime() - cpu0
	if err := errors.Join(errs...); err != nil {
		return err
	}
	peak, err := vmHWM()
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "| %s | %dx%d (%.1f Mpx) | %d KB | %d | %d MB | %d MB | %.2f s | %.2f s |\n",
		*check, side, side, float64(side)*float64(side)/1e6, len(img)/1000, *images, base>>10, peak>>10, cpu.Seconds(), wall.Seconds())
	return nil
}

// vmHWM is the process's peak resident set, in KiB.
func vmHWM() (int64, error) {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			var kb int64
			_, err := fmt.Sscanf(strings.TrimSpace(rest), "%d kB", &kb)
			return kb, err
		}
	}
	return 0, errors.New("no VmHWM in /proc/self/status")
}

// cpuTime is the process's user and system CPU time so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func chunk(w io.Writer, typ string, data []byte) {
	_ = binary.Write(w, binary.BigEndian, uint32(len(data)))
	_, _ = io.WriteString(w, typ)
	_, _ = w.Write(data)
	_ = binary.Write(w, binary.BigEndian, crc32.ChecksumIEEE(append([]byte(typ), data...)))
}

// uniformPNG16 writes a w x h 16-bit RGBA PNG of one colour without
// holding its bitmap.
func uniformPNG16(w, h uint32) []byte {
	var z bytes.Buffer
	zw, _ := zlib.NewWriterLevel(&z, zlib.BestCompression)
	row := make([]byte, 1+int(w)*8)
	for range h {
		_, _ = zw.Write(row)
	}
	_ = zw.Close()
	ihdr := make([]byte, 13)
	binary.BigEndian.PutUint32(ihdr, w)
	binary.BigEndian.PutUint32(ihdr[4:], h)
	ihdr[8], ihdr[9] = 16, 6 // 16-bit RGBA
	var out bytes.Buffer
	out.WriteString("\x89PNG\r\n\x1a\n")
	chunk(&out, "IHDR", ihdr)
	chunk(&out, "IDAT", z.Bytes())
	chunk(&out, "IEND", nil)
	return out.Bytes()
}

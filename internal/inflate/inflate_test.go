package inflate

import (
	"bytes"
	stdgzip "compress/gzip"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math/rand/v2"
	"os/exec"
	"sync"
	"testing"
	"testing/iotest"

	kgzip "github.com/klauspost/compress/gzip"
)

// reference decompresses data with compress/gzip, what containerd uses.
func reference(data []byte) ([]byte, error) {
	zr, err := stdgzip.NewReader(bytes.NewReader(data))
	if err != nil {
		return nil, err
	}
	return io.ReadAll(zr)
}

// same fails t unless Gunzip and compress/gzip agree on data: both fail,
// or both succeed with the same output.
func same(t *testing.T, data []byte, what string) {
	t.Helper()
	want, werr := reference(data)
	var got bytes.Buffer
	n, gerr := Gunzip(&got, bytes.NewReader(data))
	if (werr == nil) != (gerr == nil) {
		t.Fatalf("%s: compress/gzip says %v, Gunzip says %v", what, werr, gerr)
	}
	if gerr != nil {
		return
	}
	if n != int64(got.Len()) || !bytes.Equal(got.Bytes(), want) {
		t.Fatalf("%s: output differs: %d bytes (counted %d), want %d", what, got.Len(), n, len(want))
	}
}

// corpus is content of several kinds: empty, tiny, text, runs, random,
// short-distance patterns, and a mix longer than the output buffer.
var corpus = sync.OnceValue(makeCorpus)

func makeCorpus() map[string][]byte {
	rng := rand.New(rand.NewPCG(1, 2))
	random := make([]byte, 100<<10)
	for i := range random {
		random[i] = byte(rng.Uint32())
	}
	var text bytes.Buffer
	words := []string{"ferry", "carries", "images", "across", "the", "air", "gap", "harbor", "layer", "digest"}
	for text.Len() < 300<<10 {
		fmt.Fprintf(&text, "%s %d ", words[rng.IntN(len(words))], rng.IntN(1000))
	}
	var mix bytes.Buffer
	for mix.Len() < 400<<10 {
		switch rng.IntN(4) {
		case 0:
			mix.Write(random[:rng.IntN(5000)])
		case 1:
			mix.Write(bytes.Repeat([]byte{byte(rng.IntN(256))}, rng.IntN(3000)))
		case 2:
			mix.Write(bytes.Repeat([]byte("abcdefg"[:1+rng.IntN(7)]), rng.IntN(2000)))
		default:
			mix.Write(text.Bytes()[:rng.IntN(40000)])
		}
	}
	return map[string][]byte{
		"empty": nil, "one": {'x'}, "text": text.Bytes(), "random": random,
		"zeros": make([]byte, 600<<10), "mix": mix.Bytes(),
	}
}

// compressors are the writers layers come from: the standard library's
// and klauspost's at every level (stored, Huffman only, fixed and
// dynamic blocks).
func compressors() map[string]func([]byte) []byte {
	type newWriter func(io.Writer, int) (io.WriteCloser, error)
	libs := map[string]struct {
		levels []int
		nw     newWriter
	}{
		"std":       {[]int{-2, 0, 1, 5, 9}, func(w io.Writer, l int) (io.WriteCloser, error) { return stdgzip.NewWriterLevel(w, l) }},
		"klauspost": {[]int{-2, 0, 1, 6, 9}, func(w io.Writer, l int) (io.WriteCloser, error) { return kgzip.NewWriterLevel(w, l) }},
	}
	out := map[string]func([]byte) []byte{}
	for name, lib := range libs {
		for _, level := range lib.levels {
			out[fmt.Sprintf("%s%d", name, level)] = func(b []byte) []byte {
				var buf bytes.Buffer
				zw, err := lib.nw(&buf, level)
				if err != nil {
					panic(err)
				}
				zw.Write(b)
				zw.Close()
				return buf.Bytes()
			}
		}
	}
	return out
}

func TestGunzipAgreesOnValidStreams(t *testing.T) {
	for cname, compress := range compressors() {
		for name, content := range corpus() {
			z := compress(content)
			same(t, z, cname+"/"+name)
			// Two members, and the reader's smallest reads.
			two := append(append([]byte{}, z...), compress(content[:len(content)/3])...)
			same(t, two, cname+"/"+name+"/two members")
			if len(z) < 64<<10 {
				var got bytes.Buffer
				if _, err := Gunzip(&got, iotest.OneByteReader(bytes.NewReader(two))); err != nil {
					t.Fatalf("%s/%s one byte at a time: %v", cname, name, err)
				}
			}
		}
	}
}

func TestGunzipHeaderFields(t *testing.T) {
	var buf bytes.Buffer
	zw := stdgzip.NewWriter(&buf)
	zw.Name, zw.Comment, zw.Extra = "layer.tar", "a comment", []byte("extra field")
	zw.Write([]byte("content"))
	zw.Close()
	same(t, buf.Bytes(), "name, comment, extra")
	// A header CRC (flag FHCRC), right and wrong; a 512-byte name.
	h := append([]byte{}, buf.Bytes()...)
	h[3] |= flagHdrCrc
	end := bytes.Index(h[10:], []byte("a comment\x00")) + 10 + len("a comment\x00")
	for _, crc := range [][]byte{{0, 0}, crc16(h[:end])} {
		same(t, append(append(append([]byte{}, h[:end]...), crc...), h[end:]...), "header crc")
	}
	long := append([]byte{0x1f, 0x8b, 8, flagName, 0, 0, 0, 0, 0, 255}, bytes.Repeat([]byte{'n'}, 511)...)
	same(t, append(append(long, 0), buf.Bytes()[end:]...), "511-byte name")
	same(t, append(append(long, 'n', 0), buf.Bytes()[end:]...), "512-byte name")
}

func crc16(b []byte) []byte {
	c := crc32.ChecksumIEEE(b)
	return []byte{byte(c), byte(c >> 8)}
}

// TestGunzipAgreesOnDamage: every truncation of a small stream, and
// seeded byte changes of larger ones, get the same verdict as from
// compress/gzip, and trailing bytes are refused as it refuses them.
func TestGunzipAgreesOnDamage(t *testing.T) {
	small := compressors()["std5"]([]byte("hello, hello, hello ferry, carry this across the gap"))
	for i := range small {
		same(t, small[:i], fmt.Sprintf("truncated to %d", i))
	}
	rng := rand.New(rand.NewPCG(3, 4))
	content := corpus()["mix"][:64<<10]
	for cname, compress := range compressors() {
		z := compress(content)
		for i := 0; i < 50; i++ {
			d := append([]byte{}, z...)
			for j := 0; j <= rng.IntN(3); j++ {
				d[rng.IntN(len(d))] ^= byte(1 + rng.IntN(255))
			}
			same(t, d, fmt.Sprintf("%s, change %d", cname, i))
			same(t, d[:rng.IntN(len(d))], fmt.Sprintf("%s, cut %d", cname, i))
		}
		for _, tail := range [][]byte{{0}, {0x1f}, {0x1f, 0x8b}, make([]byte, 10), []byte("garbage after")} {
			same(t, append(append([]byte{}, z...), tail...), fmt.Sprintf("%s + %q", cname, tail))
		}
	}
}

// TestGunzipErrors: the errors say what went wrong, and a writer's and a
// reader's own errors come back as they are.
func TestGunzipErrors(t *testing.T) {
	z := compressors()["std5"](corpus()["text"])
	bad := append([]byte{}, z...)
	bad[len(bad)-5] ^= 1 // the size
	if _, err := Gunzip(io.Discard, bytes.NewReader(bad)); !errors.Is(err, ErrChecksum) {
		t.Errorf("wrong size: %v", err)
	}
	if _, err := Gunzip(io.Discard, bytes.NewReader(z[:len(z)/2])); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("cut: %v", err)
	}
	if _, err := Gunzip(io.Discard, bytes.NewReader(append([]byte("xx"), z...))); !errors.Is(err, ErrHeader) {
		t.Errorf("no magic: %v", err)
	}
	if _, err := Gunzip(io.Discard, bytes.NewReader(nil)); err != io.EOF {
		t.Errorf("empty: %v", err)
	}
	stop := errors.New("writer stops")
	if _, err := Gunzip(failWriter{stop}, bytes.NewReader(z)); err != stop {
		t.Errorf("writer error: %v", err)
	}
	rerr := errors.New("disk gone")
	r := io.MultiReader(bytes.NewReader(z[:len(z)/2]), iotest.ErrReader(rerr))
	if _, err := Gunzip(io.Discard, r); !errors.Is(err, rerr) {
		t.Errorf("read error: %v", err)
	}
	// A read error right after the last byte is still reported.
	r = io.MultiReader(bytes.NewReader(z), iotest.ErrReader(rerr))
	if _, err := Gunzip(io.Discard, r); !errors.Is(err, rerr) {
		t.Errorf("read error at the end: %v", err)
	}
}

type failWriter struct{ err error }

func (f failWriter) Write([]byte) (int, error) { return 0, f.err }

func FuzzGunzip(f *testing.F) {
	for _, compress := range compressors() {
		f.Add(compress([]byte("hello hello hello, ferry")))
		f.Add(compress(corpus()["mix"][:3000]))
	}
	f.Add([]byte{0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0})
	for _, raw := range dynamicCases() {
		f.Add(gzipOf(raw))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		same(t, data, "fuzz input")
	})
}

// TestGunzipToolsOutput: what GNU gzip, pigz (several threads: a member
// of independently compressed pieces joined by empty stored blocks) and
// libdeflate write, at their fastest, default and best levels, decodes
// as compress/gzip decodes it. .ci/run installs the three.
func TestGunzipToolsOutput(t *testing.T) {
	tools := map[string][][]string{
		"gzip":            {{"-1"}, {"-6"}, {"-9"}},
		"pigz":            {{"-1", "-p", "2", "-b", "128"}, {"-6", "-p", "2", "-b", "128"}, {"-11", "-p", "2"}},
		"libdeflate-gzip": {{"-1"}, {"-6"}, {"-12"}},
	}
	for tool, levels := range tools {
		bin, err := exec.LookPath(tool)
		if err != nil {
			t.Fatalf("%s missing (%v): apt-get install -y gzip pigz libdeflate-tools", tool, err)
		}
		for _, args := range levels {
			for name, content := range corpus() {
				if tool == "pigz" && args[0] == "-11" && len(content) > 400<<10 {
					continue // zopfli: slow
				}
				cmd := exec.Command(bin, append(args, "-c")...)
				cmd.Stdin = bytes.NewReader(content)
				var out, stderr bytes.Buffer
				cmd.Stdout, cmd.Stderr = &out, &stderr
				if err := cmd.Run(); err != nil {
					t.Fatalf("%s %v: %v: %s", tool, args, err, stderr.String())
				}
				same(t, out.Bytes(), fmt.Sprintf("%s %v of %s", tool, args, name))
			}
		}
	}
}

// zeroReader returns no bytes and no error, forever.
type zeroReader struct{}

func (zeroReader) Read([]byte) (int, error) { return 0, nil }

func TestGunzipNoProgress(t *testing.T) {
	if _, err := Gunzip(io.Discard, zeroReader{}); !errors.Is(err, io.ErrNoProgress) {
		t.Fatalf("a reader that never gives a byte: %v", err)
	}
}

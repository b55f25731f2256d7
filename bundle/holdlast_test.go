package bundle_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/ferry-airgap/ferry/bundle"
)

// TestHoldLastCutsADamagedBlobShort: the read that completes a blob whose
// check fails passes on no byte, so a request body built from it ends short
// of its length; a good blob passes whole, in reads of any size.
func TestHoldLastCutsADamagedBlobShort(t *testing.T) {
	good := bytes.Repeat([]byte("ferry "), 5000)
	sum := sha256.Sum256(good)
	h := v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(sum[:])}
	for _, buf := range []int{1, 7, 4096, len(good), 2 * len(good)} {
		hl := bundle.HoldLast(io.NopCloser(bundle.NewVerifier(bytes.NewReader(good), h, int64(len(good)))), int64(len(good)))
		got, err := io.ReadAll(io.LimitReader(readerWithBuf{hl, buf}, 1<<30))
		if err != nil || !bytes.Equal(got, good) {
			t.Errorf("buffer %d: good blob: %d of %d bytes, %v", buf, len(got), len(good), err)
		}
		bad := bytes.Clone(good)
		bad[len(bad)-1] ^= 1
		hl = bundle.HoldLast(io.NopCloser(bundle.NewVerifier(bytes.NewReader(bad), h, int64(len(bad)))), int64(len(bad)))
		var out bytes.Buffer
		_, err = io.CopyBuffer(&out, readerWithBuf{hl, buf}, make([]byte, buf))
		if err == nil || !strings.Contains(err.Error(), "digest mismatch") || out.Len() != len(bad)-1 {
			t.Errorf("buffer %d: damaged blob: %d of %d bytes passed, err %v; want all but the last, and the mismatch", buf, out.Len(), len(bad), err)
		}
	}
}

// readerWithBuf reads at most n bytes at a time (and hides WriterTo, so
// that io.Copy uses its buffer).
type readerWithBuf struct {
	r io.Reader
	n int
}

func (r readerWithBuf) Read(p []byte) (int, error) { return r.r.Read(p[:min(len(p), r.n)]) }

package bundle

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"math/rand/v2"
	"runtime"
	"testing"
)

// TestPipedHashModes: two streams written in chunks of every size through
// one hashPipe, while the number of layers being inflated moves above and
// below the cores (hashing switches between the helper and the writer's
// goroutine mid-stream), hash to what sha256 of each whole stream gives:
// no byte lost, repeated or reordered at a switch. Run with -race.
func TestPipedHashModes(t *testing.T) {
	procs := runtime.GOMAXPROCS(0)
	rng := rand.New(rand.NewPCG(1, 2))
	for _, mode := range []string{"helper", "inline", "switching"} {
		t.Run(mode, func(t *testing.T) {
			streams := [2][]byte{make([]byte, 7<<20+13), make([]byte, 3<<20+5)}
			for _, s := range streams {
				for i := range s {
					s[i] = byte(rng.Uint32())
				}
			}
			p := newHashPipe()
			hs := [2]*pipedHash{{p: p, h: sha256.New()}, {p: p, h: sha256.New()}}
			busy := false
			setBusy := func(b bool) {
				if b != busy {
					if b {
						inflating.Add(int32(procs))
					} else {
						inflating.Add(-int32(procs))
					}
					busy = b
				}
			}
			setBusy(mode == "inline")
			off := [2]int{}
			for off[0] < len(streams[0]) || off[1] < len(streams[1]) {
				i := rng.IntN(2)
				n := min(1+rng.IntN(600<<10), len(streams[i])-off[i])
				if _, err := hs[i].Write(streams[i][off[i] : off[i]+n]); err != nil {
					t.Fatal(err)
				}
				off[i] += n
				if mode == "switching" && rng.IntN(4) == 0 {
					setBusy(!busy)
				}
			}
			for i, s := range streams {
				want := sha256.Sum256(s)
				if got := hs[i].sum(); got != hex.EncodeToString(want[:]) {
					t.Errorf("stream %d: sha256 %s, want %x", i, got, want)
				}
			}
			if mode != "inline" && p.work == nil && procs > 1 {
				t.Errorf("%s: the helper never ran", mode)
			}
			if mode == "inline" && p.work != nil {
				t.Errorf("inline: the helper ran while every core was busy")
			}
			setBusy(false)
			p.close()
			if n := inflating.Load(); n != 0 {
				t.Errorf("inflating is %d after close, want 0", n)
			}
		})
	}
}

// TestInflateLayerReleases: every way out of inflateLayer (success, a
// bomb, a corrupt stream, a cancelled context) stops counting the layer
// as inflating, so later layers are not kept from the helper.
func TestInflateLayerReleases(t *testing.T) {
	content := tarOf(t, "f", bytes.Repeat([]byte("ferry "), 4<<20))
	gz := gzipLayer(t, content).data
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	for _, c := range []struct {
		name string
		ctx  context.Context
		data []byte
		lim  DeepLimits
		want error
	}{
		{"ok", context.Background(), gz, DefaultDeepLimits(), nil},
		{"bomb", context.Background(), gz, DeepLimits{MaxRatio: 2, MaxSize: 1 << 20}, ErrBomb},
		{"corrupt", context.Background(), append(gz[:len(gz)/2:len(gz)/2], make([]byte, 100)...), DefaultDeepLimits(), ErrUndecodable},
		{"cancelled", cancelled, gz, DefaultDeepLimits(), context.Canceled},
	} {
		t.Run(c.name, func(t *testing.T) {
			res, err := inflateLayer(c.ctx, bytes.NewReader(c.data), int64(len(c.data)), c.lim, nil)
			if !errors.Is(err, c.want) || (c.want == nil && (res.diffID != sha(content) || res.digest != sha(c.data).Hex)) {
				t.Fatalf("inflateLayer: %v, %+v", err, res)
			}
			if n := inflating.Load(); n != 0 {
				t.Errorf("inflating is %d after inflateLayer, want 0", n)
			}
		})
	}
}

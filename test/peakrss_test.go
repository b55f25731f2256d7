package test

import (
	"os"
	"os/exec"
	"runtime"
	"testing"
	"time"
)

// The bench's peak-RSS sampler must read the same VmHWM as /proc shows,
// and a child's own peak, not the test binary's.
func TestPeakRSS(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the benchmarks read peak RSS from /proc/PID/status, which only Linux has")
	}
	status, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	if vmHWM(status) <= 0 {
		t.Fatalf("no VmHWM in:\n%s", status)
	}
	for _, bad := range []string{"", "VmHWM: 12 kB", "Name:\tx\nVmRSS:\t5 kB\n"} {
		if kb := vmHWM([]byte(bad)); kb != 0 {
			t.Errorf("vmHWM(%q) = %d, want 0 (no line after a newline)", bad, kb)
		}
	}
	if kb := vmHWM([]byte("Name:\tx\nVmHWM:\t  1234 kB\nVmRSS:\t5 kB\n")); kb != 1234 {
		t.Errorf("vmHWM = %d, want 1234", kb)
	}

	// This test binary run again as a child that touches 96 MiB and
	// lets it go: its peak, sampled while it runs, is at least that.
	cmd := exec.Command(os.Args[0], "-test.run=^TestPeakRSSChild$")
	cmd.Env = append(os.Environ(), "FERRY_PEAKRSS_CHILD=1")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	got := make(chan int64, 1)
	go func() { got <- peakRSS(cmd.Process.Pid, done) }()
	if err := cmd.Wait(); err != nil {
		t.Fatal(err)
	}
	close(done)
	if rss := <-got; rss < 96<<20 {
		t.Errorf("peak RSS of a child that touched 96 MiB = %.1f MiB", float64(rss)/(1<<20))
	}
}

// TestPeakRSSChild is TestPeakRSS's child; it does nothing otherwise.
func TestPeakRSSChild(t *testing.T) {
	if os.Getenv("FERRY_PEAKRSS_CHILD") == "" {
		return
	}
	b := make([]byte, 96<<20)
	for i := 0; i < len(b); i += 4096 {
		b[i] = 1
	}
	time.Sleep(100 * time.Millisecond)
	runtime.KeepAlive(b)
}

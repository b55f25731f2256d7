package replicate

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	stdsync "sync"
	"testing"
	"time"

	"github.com/ferry-airgap/ferry/mapping"
)

// fakeClock moves only when told to.
type fakeClock struct {
	mu      stdsync.Mutex
	now     time.Time
	waiters []fakeWaiter
}

type fakeWaiter struct {
	at time.Time
	ch chan time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) After(d time.Duration) <-chan time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	ch := make(chan time.Time, 1)
	if d <= 0 {
		ch <- c.now
		return ch
	}
	c.waiters = append(c.waiters, fakeWaiter{c.now.Add(d), ch})
	return ch
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	kept := c.waiters[:0]
	for _, w := range c.waiters {
		if !w.at.After(c.now) {
			w.ch <- c.now
		} else {
			kept = append(kept, w)
		}
	}
	c.waiters = kept
}

// call is one round the watcher started; the test answers it.
type call struct {
	task  string
	at    time.Time
	reply chan error
}

type watchRig struct {
	t      *testing.T
	clk    *fakeClock
	t0     time.Time
	file   string
	calls  chan call
	rounds chan Round
	reload chan struct{}
	done   chan error
	cancel context.CancelFunc
}

const testPoll = 10 * time.Second

func startWatch(t *testing.T, yaml string) *watchRig {
	t.Helper()
	t0 := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	r := &watchRig{t: t, clk: &fakeClock{now: t0}, t0: t0, file: filepath.Join(t.TempDir(), "m.yaml"),
		calls: make(chan call, 100), rounds: make(chan Round, 100), reload: make(chan struct{}), done: make(chan error, 1)}
	r.write(yaml)
	ctx, cancel := context.WithCancel(t.Context())
	r.cancel = cancel
	w := &watcher{
		load: func() ([]*mapping.Task, error) {
			cfg, err := mapping.Load(r.file)
			if err != nil {
				return nil, err
			}
			return cfg.Tasks, nil
		},
		round: func(ctx context.Context, task *mapping.Task) Round {
			c := call{task: task.Name, at: r.clk.Now(), reply: make(chan error)}
			r.calls <- c
			var err error
			select {
			case err = <-c.reply:
			case <-ctx.Done():
				err = ctx.Err()
			}
			return Round{Task: task.Name, Start: c.at, Err: err}
		},
		onRound: func(rd Round) { r.rounds <- rd },
		files:   []string{r.file},
		reload:  r.reload,
		poll:    testPoll,
		clock:   r.clk,
	}
	go func() { r.done <- w.run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-r.done:
		case <-time.After(5 * time.Second):
			t.Error("watcher did not stop")
		}
	})
	return r
}

func (r *watchRig) write(yaml string) {
	r.t.Helper()
	if err := os.WriteFile(r.file, []byte(yaml), 0o600); err != nil {
		r.t.Fatal(err)
	}
}

// expect waits for the next round to start and checks its task and time.
func (r *watchRig) expect(task string, at time.Duration) call {
	r.t.Helper()
	select {
	case c := <-r.calls:
		if c.task != task || !c.at.Equal(r.t0.Add(at)) {
			r.t.Fatalf("round of %s at +%s, want %s at +%s", c.task, c.at.Sub(r.t0), task, at)
		}
		return c
	case <-time.After(5 * time.Second):
		r.t.Fatalf("no round of %s at +%s", task, at)
	}
	return call{}
}

// expectSet waits for rounds of all tasks, in any order.
func (r *watchRig) expectSet(at time.Duration, tasks ...string) map[string]call {
	r.t.Helper()
	out := map[string]call{}
	for range tasks {
		select {
		case c := <-r.calls:
			out[c.task] = c
			if !c.at.Equal(r.t0.Add(at)) {
				r.t.Fatalf("round of %s at +%s, want +%s", c.task, c.at.Sub(r.t0), at)
			}
		case <-time.After(5 * time.Second):
			r.t.Fatalf("rounds at +%s: got %v, want %v", at, out, tasks)
		}
	}
	for _, task := range tasks {
		if _, ok := out[task]; !ok {
			r.t.Fatalf("rounds at +%s: got %v, want %v", at, out, tasks)
		}
	}
	return out
}

// expectNone checks that no round starts for a while.
func (r *watchRig) expectNone(why string) {
	r.t.Helper()
	select {
	case c := <-r.calls:
		r.t.Fatalf("%s: unexpected round of %s at +%s", why, c.task, c.at.Sub(r.t0))
	case <-time.After(150 * time.Millisecond):
	}
}

func (r *watchRig) finish(c call, err error) Round {
	r.t.Helper()
	c.reply <- err
	select {
	case rd := <-r.rounds:
		if rd.Task != c.task {
			r.t.Fatalf("round of %s reported, want %s", rd.Task, c.task)
		}
		return rd
	case <-time.After(5 * time.Second):
		r.t.Fatalf("round of %s not reported", c.task)
	}
	return Round{}
}

const watchYAML = `
tasks:
  - name: a
    interval: 60
    source: {registry: src.example}
    mappings: [{from: x/a, tags: ['1']}]
  - name: b
    interval: 90
    source: {registry: src.example}
    mappings: [{from: x/b, tags: ['1']}]
  - name: once
    source: {registry: src.example}
    mappings: [{from: x/c, tags: ['1']}]
`

// TestWatchSchedule: every task runs at once, then each at its own
// interval; a task without interval runs once; a failed round is retried
// at the next interval; a round still running when its next one is due
// is not doubled, and the next one starts as soon as it ends.
func TestWatchSchedule(t *testing.T) {
	r := startWatch(t, watchYAML)
	first := r.expectSet(0, "a", "b", "once")
	r.finish(first["a"], nil)
	if rd := r.finish(first["b"], errors.New("registry down")); rd.Err == nil {
		t.Fatal("failed round reported without its error")
	}
	r.finish(first["once"], nil)
	r.expectNone("between intervals")

	r.clk.Advance(30 * time.Second)
	r.expectNone("+30s: nothing is due")
	r.clk.Advance(30 * time.Second)
	a2 := r.expect("a", 60*time.Second)
	r.expectNone("+60s: only a is due")

	// a is still running at +120s when its next round is due; b (failed at
	// +0s) is retried at +90s.
	r.clk.Advance(30 * time.Second)
	b2 := r.expect("b", 90*time.Second)
	r.finish(b2, nil)
	r.clk.Advance(30 * time.Second)
	r.expectNone("+120s: a's previous round is still running")
	// a ends late: its due round starts at once, and only one.
	r.finish(a2, nil)
	a3 := r.expect("a", 120*time.Second)
	r.expectNone("after a's late round")
	r.finish(a3, nil)

	r.clk.Advance(60 * time.Second) // +180s: a and b
	last := r.expectSet(180*time.Second, "a", "b")
	r.finish(last["a"], nil)
	r.finish(last["b"], nil)
	r.expectNone("the task without interval never runs again")
}

// TestWatchReload: a changed file is read again at the next poll (new and
// changed tasks run at once, unchanged ones keep their schedule, removed
// ones stop), so is a file on a reload signal; a file that no longer loads
// keeps the previous tasks.
func TestWatchReload(t *testing.T) {
	r := startWatch(t, watchYAML)
	first := r.expectSet(0, "a", "b", "once")
	for _, c := range first {
		r.finish(c, nil)
	}
	// Change the file: a new task d; a, b and once unchanged.
	r.write(watchYAML[:len(watchYAML)-len(`  - name: once
    source: {registry: src.example}
    mappings: [{from: x/c, tags: ['1']}]
`)] + `  - name: once
    source: {registry: src.example}
    mappings: [{from: x/c, tags: ['1']}]
  - name: d
    source: {registry: src.example}
    mappings: [{from: x/d, tags: ['1']}]
`)
	r.expectNone("before the poll")
	r.clk.Advance(testPoll)
	d := r.expect("d", testPoll)
	r.finish(d, nil)
	r.expectNone("unchanged tasks keep their schedule")

	// Remove b; change once (it runs again) on a reload signal, without
	// any time passing.
	r.write(`
tasks:
  - name: a
    interval: 60
    source: {registry: src.example}
    mappings: [{from: x/a, tags: ['1']}]
  - name: once
    source: {registry: src.example}
    mappings: [{from: x/c, tags: ['1', '2']}]
`)
	r.reload <- struct{}{}
	c := r.expect("once", testPoll)
	r.finish(c, nil)

	// A broken file is logged; the tasks go on as they were.
	r.write("tasks: [oops\n")
	r.reload <- struct{}{}
	r.expectNone("a broken file starts nothing")
	r.clk.Advance(60*time.Second - testPoll) // +60s: a is due, b is gone
	a := r.expect("a", 60*time.Second)
	r.finish(a, nil)
	r.clk.Advance(30 * time.Second) // +90s: b would have been due
	r.expectNone("b was removed")
}

// TestWatchOnceOnly: without any interval, Watch returns after one round
// of each task.
func TestWatchOnceOnly(t *testing.T) {
	r := startWatch(t, `
tasks:
  - name: x
    source: {registry: src.example}
    mappings: [{from: x/a, tags: ['1']}]
`)
	c := r.expect("x", 0)
	r.finish(c, errors.New("boom"))
	select {
	case err := <-r.done:
		if err != nil {
			t.Fatalf("Watch: %v, want nil once every task has run", err)
		}
		r.done <- nil // for the cleanup
	case <-time.After(5 * time.Second):
		t.Fatal("Watch did not return after the only round")
	}
}

// TestWatchStop: cancelling stops the watcher after the round in progress.
func TestWatchStop(t *testing.T) {
	r := startWatch(t, watchYAML)
	r.expectSet(0, "a", "b", "once")
	r.cancel()
	select {
	case err := <-r.done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Watch after cancel: %v", err)
		}
		r.done <- err
	case <-time.After(5 * time.Second):
		t.Fatal("Watch did not stop on cancel")
	}
	// Every round was told to stop and reported.
	for range 3 {
		select {
		case rd := <-r.rounds:
			if !errors.Is(rd.Err, context.Canceled) {
				t.Errorf("round of %s ended with %v", rd.Task, rd.Err)
			}
		case <-time.After(time.Second):
			t.Fatal("a round was not reported")
		}
	}
}

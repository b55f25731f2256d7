package replicate

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"reflect"
	"time"

	"github.com/ferry-airgap/ferry/mapping"
)

// Clock is the time source of Watch; tests pass a fake one.
type Clock interface {
	Now() time.Time
	After(d time.Duration) <-chan time.Time
}

type realClock struct{}

func (realClock) Now() time.Time                         { return time.Now() }
func (realClock) After(d time.Duration) <-chan time.Time { return time.After(d) }

// DefaultPoll is how often Watch looks at the mapping files' mtime.
const DefaultPoll = 5 * time.Second

// WatchOptions configure Watch.
type WatchOptions struct {
	// Reload receives a value when the files must be read again (SIGHUP).
	Reload <-chan struct{}
	// Poll is how often the files' modification time and size are checked;
	// 0 = DefaultPoll.
	Poll  time.Duration
	Clock Clock // nil = the real clock
}

// Watch runs each selected task at its own interval until ctx is done: the
// first round of every task at once, the next one interval after the
// previous one started (at once when the previous one took longer; never
// two rounds of one task at the same time). A task without interval runs
// once. A failed round is logged and retried at the next interval. The
// files are read again on Reload or when one of them changes: new or
// changed tasks run at once, removed tasks stop; a file that no longer
// loads is logged and the previous tasks go on. Watch returns when ctx is
// done (after the rounds in progress stop), or, when no task has an
// interval, once every task has run. Only an unreadable file at the start
// is an error.
func Watch(ctx context.Context, o Options, wo WatchOptions) error {
	s, err := New(o)
	if err != nil {
		return err
	}
	w := &watcher{
		load: func() ([]*mapping.Task, error) {
			tasks, warnings, err := s.Load()
			for _, w := range warnings {
				s.o.Logger.Warn(w)
			}
			return tasks, err
		},
		round:   s.Round,
		onRound: o.OnRound,
		files:   o.Files,
		reload:  wo.Reload,
		poll:    wo.Poll,
		clock:   wo.Clock,
		logger:  s.o.Logger,
	}
	return w.run(ctx)
}

type watcher struct {
	load    func() ([]*mapping.Task, error)
	round   func(context.Context, *mapping.Task) Round
	onRound func(Round)
	files   []string
	reload  <-chan struct{}
	poll    time.Duration
	clock   Clock
	logger  *slog.Logger
}

// taskState is one task's schedule.
type taskState struct {
	task      *mapping.Task
	next      time.Time // when the next round is due
	lastStart time.Time
	running   bool
	done      bool // a task without interval has had its round
	rerun     bool // changed while running: run again when it ends
	gen       int  // bumped when the task is removed or replaced
}

type finished struct {
	name string
	gen  int
	r    Round
}

type fileStamp struct {
	mod  time.Time
	size int64
	err  bool
}

func (w *watcher) stamps() []fileStamp {
	out := make([]fileStamp, len(w.files))
	for i, f := range w.files {
		fi, err := os.Stat(f)
		if err != nil {
			out[i] = fileStamp{err: true}
			continue
		}
		out[i] = fileStamp{mod: fi.ModTime(), size: fi.Size()}
	}
	return out
}

func (w *watcher) run(ctx context.Context) error {
	if w.clock == nil {
		w.clock = realClock{}
	}
	if w.poll <= 0 {
		w.poll = DefaultPoll
	}
	if w.logger == nil {
		w.logger = slog.New(slog.DiscardHandler)
	}
	tasks, err := w.load()
	if err != nil {
		return err
	}
	stamp := w.stamps()
	states := map[string]*taskState{}
	var order []string
	now := w.clock.Now()
	apply := func(tasks []*mapping.Task) {
		keep := map[string]bool{}
		order = order[:0]
		for _, t := range tasks {
			keep[t.Name] = true
			order = append(order, t.Name)
			st, ok := states[t.Name]
			switch {
			case !ok:
				states[t.Name] = &taskState{task: t, next: now}
			case !sameTask(st.task, t):
				w.logger.Info("task changed; running it now", "task", t.Name)
				st.task = t
				st.done = false
				if st.running {
					st.rerun = true
				} else {
					st.next = now
				}
			default:
				st.task = t // same content; keep the schedule
			}
		}
		for name, st := range states {
			if !keep[name] {
				w.logger.Info("task removed from the mapping files", "task", name)
				st.gen++
				if !st.running {
					delete(states, name)
				} else {
					st.done, st.task = true, nil
				}
			}
		}
	}
	apply(tasks)

	results := make(chan finished)
	running := 0
	var pollC <-chan time.Time
	for {
		now = w.clock.Now()
		// Start what is due.
		for _, name := range order {
			st := states[name]
			if st == nil || st.running || st.done || st.task == nil || st.next.After(now) {
				continue
			}
			if ctx.Err() != nil {
				break
			}
			st.running, st.lastStart, st.rerun = true, now, false
			running++
			t, gen := st.task, st.gen
			go func() {
				r := w.round(ctx, t)
				results <- finished{name: t.Name, gen: gen, r: r}
			}()
		}
		if ctx.Err() != nil && running == 0 {
			return ctx.Err()
		}
		// Nothing left to wait for: every task ran once and none repeats.
		if running == 0 && ctx.Err() == nil {
			repeats := false
			for _, st := range states {
				if !st.done {
					repeats = true
				}
			}
			if !repeats {
				return nil
			}
		}
		var due <-chan time.Time
		if ctx.Err() == nil {
			var earliest time.Time
			for _, st := range states {
				if st.running || st.done || st.task == nil {
					continue
				}
				if earliest.IsZero() || st.next.Before(earliest) {
					earliest = st.next
				}
			}
			if !earliest.IsZero() {
				due = w.clock.After(earliest.Sub(now))
			}
			if pollC == nil {
				pollC = w.clock.After(w.poll)
			}
		}
		done := ctx.Done()
		if ctx.Err() != nil {
			done, pollC = nil, nil // stopping: wait for the rounds in progress only
		}
		select {
		case <-done:
		case f := <-results:
			running--
			st := states[f.name]
			if st == nil {
				continue
			}
			st.running = false
			if f.gen == st.gen && w.onRound != nil {
				w.onRound(f.r)
			}
			if f.r.Err != nil && !errors.Is(f.r.Err, context.Canceled) {
				w.logger.Error("round failed; retrying at the next interval", "task", f.name, "error", f.r.Err)
			}
			if st.task == nil { // removed while running
				delete(states, f.name)
				continue
			}
			switch {
			case st.rerun:
				st.next, st.rerun = w.clock.Now(), false
			case st.task.Interval <= 0:
				st.done = true
			default:
				st.next = st.lastStart.Add(st.task.Interval)
			}
		case <-due:
		case <-pollC:
			pollC = nil
			if s := w.stamps(); !reflect.DeepEqual(s, stamp) {
				stamp = s
				w.logger.Info("mapping files changed; reloading")
				w.reloadTasks(&now, apply)
			}
		case <-w.reload:
			stamp = w.stamps()
			w.logger.Info("reloading the mapping files")
			w.reloadTasks(&now, apply)
		}
	}
}

func (w *watcher) reloadTasks(now *time.Time, apply func([]*mapping.Task)) {
	tasks, err := w.load()
	if err != nil {
		w.logger.Error("reloading the mapping files failed; keeping the tasks as they were", "error", err)
		return
	}
	*now = w.clock.Now()
	apply(tasks)
}

// sameTask compares two loads of a task, ignoring where it sits in its file.
func sameTask(a, b *mapping.Task) bool {
	if a == nil || b == nil {
		return a == b
	}
	norm := func(t *mapping.Task) mapping.Task {
		c := *t
		c.Line, c.Source.Line, c.Target.Line = 0, 0, 0
		c.Mappings = nil
		for _, m := range t.Mappings {
			mc := *m
			mc.Line = 0
			c.Mappings = append(c.Mappings, &mc)
		}
		return c
	}
	return reflect.DeepEqual(norm(a), norm(b))
}

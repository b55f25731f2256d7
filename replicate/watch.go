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

// schedule is the state of one run of a watcher.
type schedule struct {
	w       *watcher
	states  map[string]*taskState
	order   []string
	stamp   []fileStamp
	now     time.Time
	results chan finished
	running int
	pollC   <-chan time.Time
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
	s := &schedule{w: w, states: map[string]*taskState{}, stamp: w.stamps(), now: w.clock.Now(), results: make(chan finished)}
	s.apply(tasks)
	for {
		s.now = w.clock.Now()
		s.startDue(ctx)
		if done, err := s.over(ctx); done {
			return err
		}
		s.wait(ctx)
	}
}

// apply makes tasks the schedule's tasks: new or changed ones run at once,
// removed ones stop (after the round in progress, if any).
func (s *schedule) apply(tasks []*mapping.Task) {
	keep := map[string]bool{}
	s.order = s.order[:0]
	for _, t := range tasks {
		keep[t.Name] = true
		s.order = append(s.order, t.Name)
		st, ok := s.states[t.Name]
		switch {
		case !ok:
			s.states[t.Name] = &taskState{task: t, next: s.now}
		case !sameTask(st.task, t):
			s.w.logger.Info("task changed; running it now", "task", t.Name)
			st.task = t
			st.done = false
			if st.running {
				st.rerun = true
			} else {
				st.next = s.now
			}
		default:
			st.task = t // same content; keep the schedule
		}
	}
	for name, st := range s.states {
		if !keep[name] {
			s.w.logger.Info("task removed from the mapping files", "task", name)
			st.gen++
			if !st.running {
				delete(s.states, name)
			} else {
				st.done, st.task = true, nil
			}
		}
	}
}

// startDue starts the rounds that are due, unless ctx is done.
func (s *schedule) startDue(ctx context.Context) {
	for _, name := range s.order {
		st := s.states[name]
		if st == nil || st.running || st.done || st.task == nil || st.next.After(s.now) {
			continue
		}
		if ctx.Err() != nil {
			break
		}
		st.running, st.lastStart, st.rerun = true, s.now, false
		s.running++
		t, gen := st.task, st.gen
		go func() {
			r := s.w.round(ctx, t)
			s.results <- finished{name: t.Name, gen: gen, r: r}
		}()
	}
}

// over reports whether the watch ends: ctx is done and no round runs, or
// every task ran once and none repeats.
func (s *schedule) over(ctx context.Context) (bool, error) {
	if s.running > 0 {
		return false, nil
	}
	if ctx.Err() != nil {
		return true, ctx.Err()
	}
	for _, st := range s.states {
		if !st.done {
			return false, nil
		}
	}
	return true, nil
}

// wait waits for the next event: a round ending, a round falling due, the
// files' poll, a reload, or ctx ending (then only for the rounds running).
func (s *schedule) wait(ctx context.Context) {
	var due <-chan time.Time
	done := ctx.Done()
	if ctx.Err() == nil {
		if earliest := s.earliest(); !earliest.IsZero() {
			due = s.w.clock.After(earliest.Sub(s.now))
		}
		if s.pollC == nil {
			s.pollC = s.w.clock.After(s.w.poll)
		}
	} else {
		done, s.pollC = nil, nil // stopping: wait for the rounds in progress only
	}
	select {
	case <-done:
	case f := <-s.results:
		s.ended(f)
	case <-due:
	case <-s.pollC:
		s.pollC = nil
		if st := s.w.stamps(); !reflect.DeepEqual(st, s.stamp) {
			s.stamp = st
			s.w.logger.Info("mapping files changed; reloading")
			s.reload()
		}
	case <-s.w.reload:
		s.stamp = s.w.stamps()
		s.w.logger.Info("reloading the mapping files")
		s.reload()
	}
}

// earliest is when the next round not running falls due (zero: none).
func (s *schedule) earliest() time.Time {
	var earliest time.Time
	for _, st := range s.states {
		if st.running || st.done || st.task == nil {
			continue
		}
		if earliest.IsZero() || st.next.Before(earliest) {
			earliest = st.next
		}
	}
	return earliest
}

// ended records a round's end and schedules the task's next one.
func (s *schedule) ended(f finished) {
	s.running--
	st := s.states[f.name]
	if st == nil {
		return
	}
	st.running = false
	if f.gen == st.gen && s.w.onRound != nil {
		s.w.onRound(f.r)
	}
	if f.r.Err != nil && !errors.Is(f.r.Err, context.Canceled) {
		s.w.logger.Error("round failed; retrying at the next interval", "task", f.name, "error", f.r.Err)
	}
	switch {
	case st.task == nil: // removed while running
		delete(s.states, f.name)
	case st.rerun:
		st.next, st.rerun = s.w.clock.Now(), false
	case st.task.Interval <= 0:
		st.done = true
	default:
		st.next = st.lastStart.Add(st.task.Interval)
	}
}

// reload reads the files again; a file that no longer loads keeps the
// tasks as they were.
func (s *schedule) reload() {
	tasks, err := s.w.load()
	if err != nil {
		s.w.logger.Error("reloading the mapping files failed; keeping the tasks as they were", "error", err)
		return
	}
	s.now = s.w.clock.Now()
	s.apply(tasks)
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

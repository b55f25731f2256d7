package main

import (
	"errors"
	"strings"

	"github.com/ferry-airgap/ferry/mapping"
)

// chartFlags keeps --chart, --chart-exclude and --chart-extra-image in
// command-line order: --chart-exclude and --chart-extra-image apply to the
// --chart given before them, so that
//
//	--chart A@1 --chart-exclude busybox --chart B@2 --chart-extra-image x:1
//
// trims A and adds to B. pflag calls Set in argument order.
type chartFlags struct {
	entries []chartFlagEntry
}

type chartFlagEntry struct {
	spec           string
	exclude, extra []string
}

type chartFlagKind int

const (
	chartFlagChart chartFlagKind = iota
	chartFlagExclude
	chartFlagExtra
)

// value is the pflag.Value of one of the three flags.
func (cf *chartFlags) value(k chartFlagKind) *chartFlagValue {
	return &chartFlagValue{cf: cf, kind: k}
}

// parse turns the flags into charts; an error is bad usage.
func (cf *chartFlags) parse() ([]*mapping.Chart, error) {
	var out []*mapping.Chart
	for _, e := range cf.entries {
		ch, err := mapping.ParseChartFlag(e.spec)
		if err != nil {
			return nil, usageError{err}
		}
		for _, p := range e.exclude {
			if err := ch.AddExclude(p); err != nil {
				return nil, usageError{err}
			}
		}
		for _, r := range e.extra {
			if err := ch.AddExtraImage(r); err != nil {
				return nil, usageError{err}
			}
		}
		out = append(out, ch)
	}
	return out, nil
}

type chartFlagValue struct {
	cf   *chartFlags
	kind chartFlagKind
	vals []string
}

func (v *chartFlagValue) Set(s string) error {
	if v.kind == chartFlagChart {
		v.cf.entries = append(v.cf.entries, chartFlagEntry{spec: s})
	} else {
		if len(v.cf.entries) == 0 {
			return errors.New("applies to the --chart before it: give --chart REPO/NAME@VERSION first")
		}
		last := &v.cf.entries[len(v.cf.entries)-1]
		if v.kind == chartFlagExclude {
			last.exclude = append(last.exclude, s)
		} else {
			last.extra = append(last.extra, s)
		}
	}
	v.vals = append(v.vals, s)
	return nil
}

func (v *chartFlagValue) String() string {
	if len(v.vals) == 0 {
		return ""
	}
	return "[" + strings.Join(v.vals, ",") + "]"
}

func (v *chartFlagValue) Type() string {
	switch v.kind {
	case chartFlagExclude:
		return "PATTERN"
	case chartFlagExtra:
		return "REF"
	}
	return "REPO/NAME@VERSION"
}

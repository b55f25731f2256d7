package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/ferry-airgap/ferry/bundle"
	"github.com/spf13/cobra"
)

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// resultHead is what export and import do with their result before their
// own summary: after an interrupt (execute says so), or without a summary,
// nothing; otherwise the warnings and the failed images ("NAME: ERROR",
// from head) on stderr, then with --json the result on stdout. done means
// the caller prints nothing more and returns err.
func resultHead[S any](cmd *cobra.Command, e *env, sum *S, err error, head func(*S) (warnings, failed []string)) (done bool, _ error) {
	if cmd.Context().Err() != nil && err != nil {
		return true, err // interrupted: no result table
	}
	if sum == nil {
		return true, err
	}
	warnings, failed := head(sum)
	printWarnings(e, "", warnings)
	for _, f := range failed {
		fmt.Fprintf(e.stderr, "failed: %s\n", f)
	}
	if e.json {
		return true, writeResult(e, sum, err)
	}
	return false, err
}

// writeResult writes a command's JSON result; when err is not nil the
// object gets an "error" member (see jsonError), so that a script reads
// why from stdout, not only that (the exit status). It returns err.
func writeResult(e *env, v any, err error) error {
	e.jsonDone = true
	b, jerr := json.MarshalIndent(v, "", "  ")
	if jerr != nil {
		return jerr
	}
	if err != nil {
		eb, jerr := json.MarshalIndent(describeError(cobraUsage(err)), "  ", "  ")
		if jerr != nil {
			return jerr
		}
		body := bytes.TrimSuffix(bytes.TrimRight(b, "\n"), []byte("}"))
		body = bytes.TrimRight(body, "\n ")
		sep := ",\n"
		if bytes.HasSuffix(body, []byte("{")) {
			sep = "\n"
		}
		b = append(append(append(body, sep+`  "error": `...), eb...), "\n}"...)
	}
	b = append(b, '\n')
	if _, werr := e.stdout.Write(b); werr != nil && err == nil {
		return werr
	}
	return err
}

// printWarnings prints each warning once, on stderr.
func printWarnings(e *env, prefix string, ws []string) {
	for _, w := range ws {
		fmt.Fprintf(e.stderr, "warning: %s%s\n", prefix, w)
	}
}

// plural is "1 image", "2 images".
func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}

func nonEmpty(list []string) []string {
	return slices.DeleteFunc(list, func(s string) bool { return s == "" })
}

// checkInputs refuses, before anything runs, input files that do not exist
// or cannot be read (exit 2). "-" is standard input.
func checkInputs(paths []string, what string) error {
	for _, p := range paths {
		if p == "-" {
			continue
		}
		f, err := os.Open(p)
		if err != nil {
			return usageError{fmt.Errorf("%s: %w", p, unwrapPath(err))}
		}
		fi, err := f.Stat()
		_ = f.Close()
		if err == nil && fi.IsDir() {
			return usagef("%s is a folder, not a %s", p, what)
		}
	}
	return nil
}

// checkBundles refuses, before anything runs, bundle arguments that name
// no file: neither PATH nor its first volume PATH.000 (--split) exists.
func checkBundles(paths []string) error {
	for _, p := range paths {
		if _, err := os.Stat(p); err != nil && errors.Is(err, fs.ErrNotExist) {
			if _, verr := os.Stat(bundle.VolumeName(strings.TrimSuffix(p, ".000"), 0)); verr == nil {
				continue
			}
		}
		if err := checkInputs([]string{p}, "bundle"); err != nil {
			return err
		}
	}
	return nil
}

// bundleArgs is the Args check of commands that read bundle files.
func bundleArgs(command string) cobra.PositionalArgs {
	return func(_ *cobra.Command, args []string) error {
		if len(args) == 0 {
			return usagef("%s needs at least one bundle file", command)
		}
		return nil
	}
}

// openBundles checks the bundle arguments (see checkBundles) and opens
// them all; on an error none is left open. Close them with closeBundles.
func openBundles(paths []string) ([]*bundle.Reader, error) {
	if err := checkBundles(paths); err != nil {
		return nil, err
	}
	var readers []*bundle.Reader
	for _, p := range paths {
		r, err := bundle.Open(p)
		if err != nil {
			closeBundles(readers)
			return nil, err
		}
		readers = append(readers, r)
	}
	return readers, nil
}

func closeBundles(readers []*bundle.Reader) {
	for _, r := range readers {
		_ = r.Close()
	}
}

func unwrapPath(err error) error {
	if pe, ok := err.(*os.PathError); ok {
		return pe.Err
	}
	return err
}

// stdinFiles replaces "-" in a list of mapping files by a path that reads
// standard input: /dev/stdin when ferry's standard input is the process's,
// else (tests) a temporary copy. Standard input can be read once: "-" may
// appear once.
func stdinFiles(e *env, files []string) ([]string, func(), error) {
	none := func() {}
	i := slices.Index(files, "-")
	if i < 0 {
		return files, none, nil
	}
	if slices.Index(files[i+1:], "-") >= 0 {
		return nil, none, usagef("-f - (standard input) can be given once")
	}
	out := slices.Clone(files)
	if e.stdin == os.Stdin {
		out[i] = "/dev/stdin"
		return out, none, nil
	}
	dir, err := os.MkdirTemp("", "ferry-stdin-")
	if err != nil {
		return nil, none, err
	}
	cleanup := func() { _ = os.RemoveAll(dir) }
	out[i] = filepath.Join(dir, "stdin.yaml")
	f, err := os.Create(out[i])
	if err == nil {
		_, err = io.Copy(f, e.stdin)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}
	if err != nil {
		return nil, cleanup, fmt.Errorf("reading the mapping file from standard input: %w", err)
	}
	return out, cleanup, nil
}

// maxTagsShown is how many tags a row of a human table shows; --json
// lists them all.
const maxTagsShown = 5

// tagList joins the tags of one table row: the first maxTagsShown, then
// "… and N more", so that an image with hundreds of tags (one per
// build, all on one digest) does not make its row thousands of
// characters wide.
func tagList(tags []string) string {
	if len(tags) <= maxTagsShown {
		return strings.Join(tags, ",")
	}
	return fmt.Sprintf("%s,… and %d more", strings.Join(tags[:maxTagsShown], ","), len(tags)-maxTagsShown)
}

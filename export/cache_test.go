package export

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

func digestOf(b []byte) v1.Hash {
	h, _, _ := v1.SHA256(bytes.NewReader(b))
	return h
}

func TestCachePutGet(t *testing.T) {
	c, err := OpenCache(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	data := []byte(`{"schemaVersion":2}`)
	h := digestOf(data)
	if _, ok := c.Get(h); ok {
		t.Fatal("empty cache had an entry")
	}
	if err := c.Put(h, data); err != nil {
		t.Fatal(err)
	}
	got, ok := c.Get(h)
	if !ok || !bytes.Equal(got, data) {
		t.Fatalf("Get = %q, %v", got, ok)
	}
	// Content that does not match its digest is refused.
	if err := c.Put(h, []byte("other")); err == nil {
		t.Fatal("Put accepted content under the wrong digest")
	}
	// An entry damaged on disk is forgotten, not served.
	if err := os.WriteFile(c.path(h), []byte(`{"schemaVersion":3}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, ok := c.Get(h); ok {
		t.Fatal("served a damaged entry")
	}
	if _, err := os.Stat(c.path(h)); !os.IsNotExist(err) {
		t.Fatal("damaged entry kept")
	}
}

func TestCacheSinkKeepsOnlyCommitted(t *testing.T) {
	dir := t.TempDir()
	c, err := OpenCache(dir)
	if err != nil {
		t.Fatal(err)
	}
	data := bytes.Repeat([]byte("layer"), 1000)
	h := digestOf(data)

	// Written but never committed (the bytes did not match): dropped.
	var out memSink
	s := c.sink(h, &out)
	if _, err := s.Write(data); err != nil {
		t.Fatal(err)
	}
	s.discard()
	if _, ok := c.Open(h, int64(len(data))); ok {
		t.Fatal("uncommitted blob kept")
	}
	// Wrong bytes, a reset, the right bytes, committed: the entry holds
	// only the right bytes, and no temporary file is left.
	out.Reset()
	s = c.sink(h, &out)
	if _, err := s.Write(bytes.Repeat([]byte("x"), 7000)); err != nil {
		t.Fatal(err)
	}
	if err := s.Reset(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Write(data); err != nil {
		t.Fatal(err)
	}
	s.commit()
	s.discard()
	if !bytes.Equal(out.Bytes(), data) {
		t.Fatal("the sink passed on other bytes")
	}
	f, ok := c.Open(h, int64(len(data)))
	if !ok {
		t.Fatal("committed blob missing")
	}
	got, _ := io.ReadAll(f)
	f.Close()
	if !bytes.Equal(got, data) {
		t.Fatal("cached bytes differ")
	}
	tmp, _ := os.ReadDir(filepath.Join(dir, "tmp"))
	if len(tmp) != 0 {
		t.Fatalf("temporary files left: %v", tmp)
	}
	// A wrong-sized entry is treated as missing and removed.
	if _, ok := c.Open(h, int64(len(data))+1); ok {
		t.Fatal("wrong-sized entry served")
	}
}

func TestLockOutput(t *testing.T) {
	out := filepath.Join(t.TempDir(), "bundle.tar")
	unlock, err := lockOutput(out)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := lockOutput(out); !errors.Is(err, ErrLocked) {
		t.Fatalf("second lock: %v, want ErrLocked", err)
	}
	unlock()
	unlock2, err := lockOutput(out)
	if err != nil {
		t.Fatalf("lock after unlock: %v", err)
	}
	unlock2()
	if entries, _ := os.ReadDir(filepath.Dir(out)); len(entries) != 0 {
		t.Fatalf("the lock left files beside the output: %v", entries)
	}
}

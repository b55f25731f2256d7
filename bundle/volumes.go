package bundle

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
)

// A bundle may be split into numbered volumes (--split): BUNDLE.tar.000,
// BUNDLE.tar.001, ... whose concatenation is the tar. Volumes are plain byte
// ranges of one archive: an entry may span two of them, and `cat
// BUNDLE.tar.* > BUNDLE.tar` joins them.

// VolumeName is the name of volume i of the bundle called base.
func VolumeName(base string, i int) string { return fmt.Sprintf("%s.%03d", base, i) }

// volumeSet is a file made of consecutive parts. It implements io.ReaderAt
// and io.WriterAt over the whole; parts are equally sized except the last.
type volumeSet struct {
	files []*os.File
	part  int64 // size of every part but the last
	total int64
}

func (v *volumeSet) locate(off int64) (int, int64) {
	if len(v.files) == 1 {
		return 0, off
	}
	i := int(off / v.part)
	if i >= len(v.files) {
		i = len(v.files) - 1
	}
	return i, off - int64(i)*v.part
}

func (v *volumeSet) partSize(i int) int64 {
	if i == len(v.files)-1 {
		return v.total - int64(i)*v.part
	}
	return v.part
}

// ReadAt reads across part boundaries.
func (v *volumeSet) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, errors.New("negative offset")
	}
	n := 0
	for len(p) > 0 {
		if off >= v.total {
			return n, io.EOF
		}
		i, in := v.locate(off)
		chunk := p
		if rest := v.partSize(i) - in; int64(len(chunk)) > rest {
			chunk = chunk[:rest]
		}
		m, err := v.files[i].ReadAt(chunk, in)
		n += m
		off += int64(m)
		p = p[m:]
		if err != nil && !(err == io.EOF && m == len(chunk)) {
			return n, err
		}
	}
	return n, nil
}

// WriteAt writes across part boundaries.
func (v *volumeSet) WriteAt(p []byte, off int64) (int, error) {
	n := 0
	for len(p) > 0 {
		if off >= v.total {
			return n, fmt.Errorf("write past the end of the bundle (%d)", v.total)
		}
		i, in := v.locate(off)
		chunk := p
		if rest := v.partSize(i) - in; int64(len(chunk)) > rest {
			chunk = chunk[:rest]
		}
		m, err := v.files[i].WriteAt(chunk, in)
		n += m
		off += int64(m)
		p = p[m:]
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

func (v *volumeSet) sync() error {
	for _, f := range v.files {
		if err := f.Sync(); err != nil {
			return err
		}
	}
	return nil
}

func (v *volumeSet) close() error {
	var first error
	for _, f := range v.files {
		if err := f.Close(); err != nil && first == nil {
			first = err
		}
	}
	return first
}

// openVolumes finds the files of the bundle named path: path itself when it
// is a file, else path.000, path.001, ... (path may also name the first
// volume, BUNDLE.tar.000).
func openVolumes(path string) (*volumeSet, []string, error) {
	if st, err := os.Stat(path); err == nil && !strings.HasSuffix(path, ".000") {
		if !st.Mode().IsRegular() {
			return nil, nil, fmt.Errorf("%w: %s is not a regular file", ErrCorrupt, path)
		}
		f, err := os.Open(path)
		if err != nil {
			return nil, nil, err
		}
		return &volumeSet{files: []*os.File{f}, part: st.Size(), total: st.Size()}, []string{path}, nil
	}
	base := strings.TrimSuffix(path, ".000")
	var names []string
	for i := 0; ; i++ {
		name := VolumeName(base, i)
		if _, err := os.Stat(name); err != nil {
			break
		}
		names = append(names, name)
	}
	if len(names) == 0 {
		_, err := os.Stat(path)
		return nil, nil, err // the not-exist error for what the user named
	}
	v := &volumeSet{}
	for i, name := range names {
		f, err := os.Open(name)
		if err != nil {
			_ = v.close()
			return nil, nil, err
		}
		v.files = append(v.files, f)
		st, err := f.Stat()
		if err != nil {
			_ = v.close()
			return nil, nil, err
		}
		if !st.Mode().IsRegular() {
			_ = v.close()
			return nil, nil, fmt.Errorf("%w: %s is not a regular file", ErrCorrupt, name)
		}
		switch {
		case i == 0:
			v.part = st.Size()
		case i < len(names)-1 && st.Size() != v.part:
			_ = v.close()
			return nil, nil, fmt.Errorf("%w: volume %s is %d bytes, the first is %d (only the last volume may be smaller)", ErrCorrupt, filepath.Base(name), st.Size(), v.part)
		case i == len(names)-1 && st.Size() > v.part:
			_ = v.close()
			return nil, nil, fmt.Errorf("%w: last volume %s is larger than the first", ErrCorrupt, filepath.Base(name))
		}
		v.total += st.Size()
	}
	if v.part == 0 {
		_ = v.close()
		return nil, nil, fmt.Errorf("%w: first volume %s is empty", ErrCorrupt, names[0])
	}
	return v, names, nil
}

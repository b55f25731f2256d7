package bundle

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"

	"github.com/ferry-airgap/ferry/internal/writeback"
)

// kernelCopy copies with copy_file_range within one volume at a time. It
// returns 0 and no error when the kernel cannot copy between these files
// (another filesystem on an old kernel, a filesystem without support):
// the caller then copies through a buffer.
func kernelCopy(vs *volumeSet, src *os.File, off, dstOff, n int64) (int64, error) {
	var done int64
	for done < n {
		i, in := vs.locate(dstOff + done)
		want := min(n-done, vs.partSize(i)-in)
		roff, woff := off+done, in
		m, err := unix.CopyFileRange(int(src.Fd()), &roff, int(vs.files[i].Fd()), &woff, int(want), 0)
		if err != nil {
			if done == 0 && (errors.Is(err, unix.EXDEV) || errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.EINVAL)) {
				return 0, nil
			}
			return done, err
		}
		if m == 0 {
			return done, fmt.Errorf("%w: the source file ends after %d of %d bytes", ErrShortBlob, done, n)
		}
		done += int64(m)
	}
	return done, nil
}

// writeback asks the kernel to start writing n bytes from off (counted
// across volumes) to disk, without waiting for it: the final fsync then
// has little left to do. Errors are left to that fsync.
func (v *volumeSet) writeback(off, n int64) {
	for n > 0 {
		i, in := v.locate(off)
		m := min(n, v.partSize(i)-in)
		if m <= 0 {
			return
		}
		writeback.Start(v.files[i], in, m)
		off, n = off+m, n-m
	}
}

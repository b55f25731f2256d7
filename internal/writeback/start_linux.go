package writeback

import (
	"os"

	"golang.org/x/sys/unix"
)

// Start asks the kernel to start writing n bytes of f from off to disk
// (sync_file_range with SYNC_FILE_RANGE_WRITE), without waiting for it.
// Errors are left to the fsync that follows.
func Start(f *os.File, off, n int64) {
	_ = unix.SyncFileRange(int(f.Fd()), off, n, unix.SYNC_FILE_RANGE_WRITE)
}

package slotwriter

import (
	"errors"
	"log/slog"

	"golang.org/x/sys/unix"
)

// rangeIsHole reports whether t's range of a regular file holds no data
// (SEEK_DATA finds none before its end), the condition for leaving zero
// buffers unwritten. Anything it cannot establish counts as data.
func rangeIsHole(t Target, log *slog.Logger) bool {
	f, ok := t.Device.(fileDevice)
	if !ok {
		log.Debug("zero runs are written: the target is not a file")
		return false
	}
	st, err := f.Stat()
	if err != nil || !st.Mode().IsRegular() {
		log.Debug("zero runs are written: the target is not a regular file")
		return false
	}
	if t.Offset >= st.Size() {
		return true // past the end of the file: nothing there yet
	}
	next, err := unix.Seek(int(f.Fd()), t.Offset, unix.SEEK_DATA)
	if errors.Is(err, unix.ENXIO) {
		return true // no data from Offset to the end of the file
	}
	if err != nil {
		log.Debug("zero runs are written: SEEK_DATA failed", slog.Any("error", err))
		return false
	}
	if next < t.Offset+t.Size {
		log.Debug("zero runs are written: the target range already holds data", slog.Int64("data_at", next))
		return false
	}
	return true
}

// dropCache asks the kernel to forget cached pages of the range so the
// verification reads what reached the disk; a device that is not a file
// descriptor, or a kernel that refuses, just means reading the cache.
func dropCache(d Device, off, n int64) {
	if f, ok := d.(fileDevice); ok {
		_ = unix.Fadvise(int(f.Fd()), off, n, unix.FADV_DONTNEED)
	}
}

// startWriteback asks the kernel to start writing the range to the disk
// now, without waiting: the disk then works while the next buffers are
// downloaded and hashed, and the fsync at the end only waits for the
// tail instead of writing the whole image. Durability still comes from
// that fsync; a device that is not a file descriptor, or a kernel that
// refuses, just leaves all the writing to it.
func startWriteback(d Device, off, n int64) {
	if f, ok := d.(fileDevice); ok {
		_ = unix.SyncFileRange(int(f.Fd()), off, n, unix.SYNC_FILE_RANGE_WRITE)
	}
}

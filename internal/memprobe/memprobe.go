// Package memprobe measures what a process keeps in memory, for leak tests: the resident
// set after both heaps have handed their free pages back to the OS.
package memprobe

/*
#include <stdlib.h>
#ifdef __GLIBC__
#include <malloc.h>
static int memprobe_trim(void) { return malloc_trim(0); }
#else
static int memprobe_trim(void) { return 0; }
#endif
*/
import "C"

import (
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
)

// SettledRSS collects Go garbage, returns freed pages of the Go heap and of the C heap
// (glibc's malloc_trim; nothing with other C libraries) to the OS, and returns the
// resident set size in bytes (from /proc/self/statm), so that only memory still
// referenced counts. Without the C heap's trim, opening and closing lavapipe devices
// grows RSS by tens of MiB that glibc keeps in its per-thread arenas: Vulkan calls made
// from cgo run on whichever OS thread the goroutine is on, and the driver starts threads
// of its own, so freed driver memory spreads over many arenas (growth that levels off,
// not a leak).
func SettledRSS() (int64, error) {
	runtime.GC()
	debug.FreeOSMemory()
	C.memprobe_trim()
	data, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0, err
	}
	f := strings.Fields(string(data))
	if len(f) < 2 {
		return 0, fmt.Errorf("memprobe: /proc/self/statm: %q", data)
	}
	pages, err := strconv.ParseInt(f[1], 10, 64)
	if err != nil {
		return 0, err
	}
	return pages * int64(os.Getpagesize()), nil
}

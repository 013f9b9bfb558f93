package vk

/*
#include <stdlib.h>
#ifdef __GLIBC__
#include <malloc.h>
static int dv_trim_c_heap(void) { return malloc_trim(0); }
#else
static int dv_trim_c_heap(void) { return 0; }
#endif
*/
import "C"

// trimCHeap hands the C heap's free pages back to the OS (glibc's malloc_trim; a no-op
// with other C libraries). The leak test calls it before reading RSS, as it calls
// debug.FreeOSMemory for the Go heap: glibc keeps freed memory in its arenas (one per
// thread that allocated, up to 8 per core) and by itself gives back only what sits at
// the top of an arena beyond a threshold that it raises as large blocks are freed.
// Vulkan calls made from cgo run on whichever OS thread the goroutine is on, and the
// driver starts threads of its own per device, so a process opening and closing devices
// spreads the driver's allocations over many arenas, which together keep tens of MiB
// of freed memory in RSS: growth that levels off and that malloc_trim gives back, not
// a leak.
func trimCHeap() { C.dv_trim_c_heap() }

package kern

import "os"

// DMAVK_CM_SPV names a SPIR-V file built from shaders/attention_cm.comp with debugging
// defines (DEBUG_SCALAR_S, DEBUG_NO_SHUFFLE, DEBUG_SCALAR_PV) to run the coopmat tests
// with parts of the kernel replaced by scalar code: a bisection tool for a device.
func init() {
	if path := os.Getenv("DMAVK_CM_SPV"); path != "" {
		cmCode = func() ([]byte, error) { return os.ReadFile(path) }
	}
}

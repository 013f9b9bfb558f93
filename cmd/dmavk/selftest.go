package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/dmavk/dmavk/dma"
	"github.com/dmavk/dmavk/internal/check"
	"github.com/dmavk/dmavk/vk"
)

func init() {
	register(&command{
		name:  "selftest",
		short: "check every DMA path on the device against the float64 reference",
		usage: "[--all-devices] [--long] [--seed N] [--json]",
		run:   runSelftest,
	})
}

// errSelftestFailed makes the exit status 1 after the table has been printed.
var errSelftestFailed = errors.New("selftest failed")

func runSelftest(args []string, stdout io.Writer) error {
	c := commands["selftest"]
	fs := newFlagSet(c, stdout)
	all := fs.Bool("all-devices", false, "test every device, not only the chosen one")
	long := fs.Bool("long", false, "add longer sequences (slow on a CPU device)")
	seed := fs.Uint64("seed", 0, "random seed (0: a fresh one, printed)")
	asJSON := fs.Bool("json", false, "print the outcomes as JSON")
	filter := fs.String("run", "", "only cases whose name contains this text")
	if err := parseFlags(c, fs, args, stdout); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usagef("unexpected arguments: %s", strings.Join(fs.Args(), " "))
	}
	if *seed == 0 {
		*seed = rand.Uint64()
	}
	in, err := vk.NewInstance(vk.Config{})
	if err != nil {
		return err
	}
	defer in.Close()
	var targets []vk.PhysicalDevice
	if *all {
		targets = in.Devices()
	} else {
		pd, err := in.Choose()
		if err != nil {
			return err
		}
		targets = []vk.PhysicalDevice{pd}
	}
	type report struct {
		Device  string  `json:"device"`
		Path    string  `json:"path"`
		Case    string  `json:"case"`
		MaxAbs  float64 `json:"max_abs_error"`
		Rel     float64 `json:"rel_error"`
		Tol     float64 `json:"tolerance"`
		LSEAbs  float64 `json:"lse_abs_error"`
		Verdict string  `json:"verdict"`
		Error   string  `json:"error,omitempty"`
		Millis  float64 `json:"ms"`
	}
	var reports []report
	failed := 0
	ctx := context.Background()
	for _, pd := range targets {
		// Every path the device has: the default (tensor cores where present), and on
		// devices with cooperative matrices the KHR kernel (coopmat2 off) and the
		// portable path forced.
		configs := []dma.Config{{}}
		if pd.Caps.CoopMat2 && os.Getenv("DMAVK_DISABLE_COOPMAT2") != "1" && os.Getenv("DMAVK_DISABLE_COOPMAT") != "1" {
			configs = append(configs, dma.Config{DisableCoopMat2: true})
		}
		if pd.Caps.CoopMat && os.Getenv("DMAVK_DISABLE_COOPMAT") != "1" {
			configs = append(configs, dma.Config{DisableCoopMat: true})
		}
		if !*asJSON {
			v := ""
			if in.Validating() {
				v = ", validation on"
			}
			fmt.Fprintf(stdout, "device %d: %s (%s, Vulkan %s), seed %d%s\n\n", pd.Index, pd.Caps.Name, pd.Caps.Type, pd.Caps.APIVersionString(), *seed, v)
		}
		start := time.Now()
		tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', tabwriter.AlignRight|tabwriter.Debug)
		if !*asJSON {
			fmt.Fprintln(tw, "path\tcase\tmax abs err\trel err\ttol\tverdict\tms\t")
		}
		n := 0
		for _, cfg := range configs {
			dev, err := dma.OpenOn(in, pd, cfg)
			if err != nil {
				return err
			}
			rng := rand.New(rand.NewPCG(*seed, 0x5e1f7e57))
			for _, cs := range check.Suite(*long) {
				if *filter != "" && !strings.Contains(cs.Name(), *filter) {
					continue
				}
				o := check.Run(ctx, dev, cs, rng)
				// Under validation a case that draws any message from the layer fails,
				// whatever its numbers.
				if msgs := validationFindings(in); len(msgs) > 0 && o.Err == nil {
					o.Err = fmt.Errorf("validation: %d message(s): %s", len(msgs), strings.Join(msgs, " | "))
				}
				path := o.Path
				if path == "" {
					path = "-"
				}
				r := report{Device: pd.Caps.Name, Path: path, Case: cs.Name(), MaxAbs: o.MaxAbs, Rel: o.Rel, Tol: o.Tol,
					LSEAbs: o.LSEAbs, Verdict: o.Verdict(), Millis: float64(o.Duration.Microseconds()) / 1000}
				if o.Err != nil {
					r.Error = o.Err.Error()
				}
				if r.Verdict != "ok" {
					failed++
				}
				n++
				reports = append(reports, r)
				if !*asJSON {
					fmt.Fprintf(tw, "%s\t%s\t%.2e\t%.2e\t%.0e\t%s\t%.1f\t\n", r.Path, r.Case, r.MaxAbs, r.Rel, r.Tol, r.Verdict, r.Millis)
					if r.Error != "" {
						tw.Flush()
						fmt.Fprintf(stdout, "    error: %s\n", r.Error)
					}
				}
			}
			dev.Close()
			if msgs := validationFindings(in); len(msgs) > 0 {
				failed++
				reports = append(reports, report{Device: pd.Caps.Name, Path: "-", Case: "device close", Verdict: "ERROR",
					Error: fmt.Sprintf("validation: %d message(s): %s", len(msgs), strings.Join(msgs, " | "))})
				tw.Flush()
				fmt.Fprintf(stdout, "    error at device close: %s\n", reports[len(reports)-1].Error)
			}
		}
		tw.Flush()
		if !*asJSON {
			fmt.Fprintf(stdout, "\n%d cases in %.1fs\n\n", n, time.Since(start).Seconds())
		}
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(reports); err != nil {
			return err
		}
	} else {
		fmt.Fprintf(stdout, "%d passed, %d failed\n", len(reports)-failed, failed)
	}
	if failed > 0 {
		fmt.Fprintf(os.Stderr, "dmavk selftest: %d of %d cases failed (seed %d)\n", failed, len(reports), *seed)
		return errSelftestFailed
	}
	return nil
}

// validationFindings returns the validation layer's messages since the last call: its
// findings and any error (the loader's general warnings are not about this program).
func validationFindings(in *vk.Instance) []string {
	var out []string
	for _, m := range in.Messages() {
		if m.Validation || m.Severity == "error" {
			out = append(out, m.Severity+": "+m.Text)
		}
	}
	return out
}

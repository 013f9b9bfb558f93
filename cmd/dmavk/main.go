// Command dmavk inspects and exercises the Vulkan devices dmavk runs on.
//
// Usage:
//
//	dmavk <command> [flags] [args]
//	dmavk help [command]
//
// Errors are printed as "dmavk: ..." and exit with status 1; usage errors exit with
// status 2.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
)

// command is one subcommand. run gets the arguments after the command's name and
// returns an error; a usageError (or flag.ErrHelp) means the arguments were wrong.
type command struct {
	name  string
	short string // one line for the command list
	usage string // the arguments, for "dmavk help <name>"
	run   func(args []string, stdout io.Writer) error
}

// commands is filled by each subcommand's file in an init function.
var commands = map[string]*command{}

func register(c *command) { commands[c.name] = c }

// usageError marks an error as a mistake in the command line (exit status 2).
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func usagef(format string, args ...any) error {
	return usageError{fmt.Errorf(format, args...)}
}

// newFlagSet returns a FlagSet for a subcommand that reports errors instead of exiting
// or printing: parseFlags prints the help for -h to stdout, and dispatch prints
// errors.
func newFlagSet(c *command, stdout io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("dmavk "+c.name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	return fs
}

// printUsage writes a command's help: its arguments, what it does and its flags.
func printUsage(w io.Writer, c *command, fs *flag.FlagSet) {
	fmt.Fprintf(w, "usage: dmavk %s %s\n\n%s\n", c.name, c.usage, c.short)
	n := 0
	fs.VisitAll(func(*flag.Flag) { n++ })
	if n > 0 {
		fmt.Fprintln(w, "\nflags:")
		fs.SetOutput(w)
		fs.PrintDefaults()
		fs.SetOutput(io.Discard)
	}
}

// parseFlags parses args with fs: -h prints the help to stdout and returns
// flag.ErrHelp; any other failure is a usageError.
func parseFlags(c *command, fs *flag.FlagSet, args []string, stdout io.Writer) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			printUsage(stdout, c, fs)
			return err
		}
		return usageError{err}
	}
	return nil
}

func mainUsage(w io.Writer) {
	fmt.Fprintln(w, "dmavk inspects and exercises the Vulkan devices dmavk runs on.")
	fmt.Fprintln(w, "\nusage: dmavk <command> [flags] [args]")
	fmt.Fprintln(w, "\ncommands:")
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-10s %s\n", n, commands[n].short)
	}
	fmt.Fprintf(w, "  %-10s %s\n", "help", "show this list, or a command's flags: dmavk help <command>")
	fmt.Fprintln(w, "\nenvironment: DMAVK_DEVICE picks the device (index or name substring),")
	fmt.Fprintln(w, "DMAVK_VALIDATE=1 turns on the Vulkan validation layer, DMAVK_CACHE_DIR moves the pipeline cache.")
}

// dispatch runs the command line args (without the program name) and returns the exit
// status.
func dispatch(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		mainUsage(stderr)
		return 2
	}
	name, rest := args[0], args[1:]
	switch name {
	case "help", "-h", "-help", "--help":
		if len(rest) == 0 {
			mainUsage(stdout)
			return 0
		}
		c, ok := commands[rest[0]]
		if !ok {
			fmt.Fprintf(stderr, "dmavk: help: unknown command %q\n", rest[0])
			return 2
		}
		return dispatch([]string{c.name, "-h"}, stdout, stderr)
	}
	c, ok := commands[name]
	if !ok {
		fmt.Fprintf(stderr, "dmavk: unknown command %q (run 'dmavk help')\n", name)
		return 2
	}
	err := c.run(rest, stdout)
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.As(err, new(usageError)):
		fmt.Fprintf(stderr, "dmavk %s: %v\n", name, err)
		fmt.Fprintf(stderr, "run 'dmavk help %s' for usage\n", name)
		return 2
	default:
		fmt.Fprintf(stderr, "dmavk: %v\n", err)
		return 1
	}
}

func main() {
	os.Exit(dispatch(os.Args[1:], os.Stdout, os.Stderr))
}

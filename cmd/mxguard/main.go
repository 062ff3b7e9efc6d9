// Command mxguard is an anti-spam SMTP proxy for port 25: it refuses the
// obvious junk early and cheaply and relays everything else, in lockstep, to
// the Postfix or Exim behind it.
//
//	mxguard serve [-config FILE]         run
//	mxguard check-config [-config FILE]  validate and print the effective config
//	mxguard demo                         run on loopback in front of a built-in backend
//	mxguard test -client IP ...          what would mxguard do with this session?
//	mxguard log [-summary] [FILE...]     what was refused, and why
//	mxguard version
package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"strings"
)

// version is set at build time: -ldflags "-X main.version=1.2.3".
var version = "dev"

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// runner runs a subcommand once its flags are parsed; args are what is left.
type runner func(args []string, stdout, stderr io.Writer) int

// command is one subcommand: its flags are defined on a FlagSet of its
// own, so `mxguard CMD -h` prints them and the manual can list them.
type command struct {
	name     string
	args     string // the synopsis after the flags: "[FILE...]"
	summary  string
	setFlags func(fs *flag.FlagSet) runner
}

// commands are mxguard's subcommands, in the order usage lists them.
var commands = []command{
	{"serve", "", "run the proxy", serveFlags},
	{"check-config", "", "validate a configuration and print the effective one", checkConfigFlags},
	{"demo", "", "run on loopback in front of a built-in demo backend and DNS", demoFlags},
	{"test", "", "what would mxguard do with this session? (sends nothing)", testFlags},
	{"log", "[FILE...]", "what was refused, and why (reads the decision log)", logFlags},
	{"state", "show IP|CIDR|DOMAIN | forget IP|CIDR | top", "what mxguard remembers of clients: show it, forget it, the worst and best", stateFlags},
	{"version", "", "print the version", func(*flag.FlagSet) runner {
		return func(_ []string, stdout, _ io.Writer) int {
			fmt.Fprintf(stdout, "mxguard %s\n", versionString())
			return 0
		}
	}},
}

func findCommand(name string) *command {
	for i := range commands {
		if commands[i].name == name {
			return &commands[i]
		}
	}
	return nil
}

// newFlagSet builds the FlagSet of c, with its usage text going to w.
func (c *command) newFlagSet(w io.Writer) (*flag.FlagSet, runner) {
	fs := flag.NewFlagSet(c.name, flag.ContinueOnError)
	fs.SetOutput(w)
	r := c.setFlags(fs)
	fs.Usage = func() {
		w := fs.Output()
		fmt.Fprintf(w, "usage: mxguard %s [flags] %s\n  %s\n", c.name, c.args, c.summary)
		if hasFlags(fs) {
			fmt.Fprintln(w, "flags:")
			fs.PrintDefaults()
		}
	}
	return fs, r
}

func hasFlags(fs *flag.FlagSet) bool {
	n := 0
	fs.VisitAll(func(*flag.Flag) { n++ })
	return n > 0
}

// run is main without the process: exit status 0 on success, 1 on a
// failure, 2 on a usage error (an unknown command or flag).
func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		usage(stderr)
		return 2
	}
	name, args := args[0], args[1:]
	switch name {
	case "-version", "--version":
		name = "version"
	case "help", "-h", "-help", "--help":
		usage(stdout)
		return 0
	}
	c := findCommand(name)
	if c == nil {
		fmt.Fprintf(stderr, "mxguard: unknown command %q\n", name)
		usage(stderr)
		return 2
	}
	// -h goes to standard output and succeeds; a bad flag is a usage
	// error on standard error.
	var msg bytes.Buffer
	fs, r := c.newFlagSet(&msg)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fs.SetOutput(stdout)
			fs.Usage()
			return 0
		}
		stderr.Write(msg.Bytes()) // the error, then the usage
		return 2
	}
	fs.SetOutput(stderr)
	return r(fs.Args(), stdout, stderr)
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: mxguard COMMAND [flags]; mxguard COMMAND -h lists a command's flags")
	fmt.Fprintln(w, "commands:")
	for _, c := range commands {
		fmt.Fprintf(w, "  %-14s %s\n", c.name, c.summary)
	}
	fmt.Fprintf(w, "The configuration file is %s unless -config says otherwise.\n", defaultConfig)
}

func versionString() string {
	v := version
	if bi, ok := debug.ReadBuildInfo(); ok {
		v += " (" + bi.GoVersion + ")"
	}
	return v
}

// noArgs wraps a runner for commands that take no arguments.
func noArgs(name string, r func(stdout, stderr io.Writer) int) runner {
	return func(args []string, stdout, stderr io.Writer) int {
		if len(args) > 0 {
			fmt.Fprintf(stderr, "mxguard %s: unexpected arguments: %s\n", name, strings.Join(args, " "))
			return 2
		}
		return r(stdout, stderr)
	}
}

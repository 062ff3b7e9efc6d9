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
	"flag"
	"fmt"
	"io"
	"os"
	"runtime/debug"
)

// version is set at build time: -ldflags "-X main.version=1.2.3".
var version = "dev"

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		usage(stderr)
		return 2
	}
	cmd, args := args[0], args[1:]
	switch cmd {
	case "serve":
		fs := flag.NewFlagSet("serve", flag.ContinueOnError)
		fs.SetOutput(stderr)
		path := fs.String("config", defaultConfig, "configuration file")
		if fs.Parse(args) != nil {
			return 2
		}
		return serve(*path, stderr)
	case "check-config":
		fs := flag.NewFlagSet("check-config", flag.ContinueOnError)
		fs.SetOutput(stderr)
		path := fs.String("config", defaultConfig, "configuration file")
		if fs.Parse(args) != nil {
			return 2
		}
		return checkConfig(*path, stdout, stderr)
	case "demo":
		fs := flag.NewFlagSet("demo", flag.ContinueOnError)
		fs.SetOutput(stderr)
		listen := fs.String("listen", "127.0.0.1:2525", "where the demo listens")
		dir := fs.String("dir", "mxguard-demo", "folder for the demo backend's mail")
		delay := fs.Duration("greet-delay", defaultDemoDelay, "greeting delay")
		if fs.Parse(args) != nil {
			return 2
		}
		return demo(*listen, *dir, *delay, stdout, stderr)
	case "test":
		return testSession(args, stdout, stderr)
	case "log":
		return logCmd(args, stdout, stderr)
	case "version", "-version", "--version":
		fmt.Fprintf(stdout, "mxguard %s\n", versionString())
		return 0
	case "help", "-h", "-help", "--help":
		usage(stdout)
		return 0
	default:
		fmt.Fprintf(stderr, "mxguard: unknown command %q\n", cmd)
		usage(stderr)
		return 2
	}
}

func usage(w io.Writer) {
	fmt.Fprint(w, `usage:
  mxguard serve [-config FILE]          run the proxy (default config `+defaultConfig+`)
  mxguard check-config [-config FILE]   validate a config and print the effective one
  mxguard demo [-listen ADDR] [-dir DIR] run on loopback in front of a built-in demo backend
  mxguard test [-config FILE] [-zone FILE] -client IP [-helo NAME] [-from ADDR] [-to ADDR]... [-message FILE]
                                        what would mxguard do with this session? (sends nothing)
  mxguard log [-summary] [-all|-would] [-client CIDR] [-rule PATTERN] [-stage S] [-text T] [-since 2h] [FILE...]
                                        what was refused, and why (reads the decision log)
  mxguard version                       print the version
`)
}

func versionString() string {
	v := version
	if bi, ok := debug.ReadBuildInfo(); ok {
		v += " (" + bi.GoVersion + ")"
	}
	return v
}

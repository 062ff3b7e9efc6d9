package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/mxguard/mxguard/config"
	"github.com/mxguard/mxguard/state"
)

func stateFlags(fs *flag.FlagSet) runner {
	path := fs.String("config", defaultConfig, "configuration file (for the store and the control socket)")
	n := fs.Int("n", 20, "how many addresses top lists, at each end")
	return func(args []string, stdout, stderr io.Writer) int {
		if len(args) < 1 || (args[0] != "top" && len(args) != 2) || (args[0] == "top" && len(args) != 1) {
			fmt.Fprintln(stderr, "usage: mxguard state [-config FILE] show IP|CIDR|DOMAIN | forget IP|CIDR | top [-n N]")
			return 2
		}
		target := ""
		if len(args) == 2 {
			target = args[1]
		}
		return stateCmd(*path, args[0], target, *n, stdout, stderr)
	}
}

// stateCmd runs an admin command on the state store: in the running
// mxguard when one answers on the control socket (the bolt file is locked
// while it runs), else on the store itself.
func stateCmd(path, op, target string, n int, stdout, stderr io.Writer) int {
	cfg, err := config.Load(path)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	if ok, err := state.Ask(cfg.State.ControlSocket, op, target, n, stdout); ok {
		if err != nil {
			fmt.Fprintf(stderr, "mxguard state: %v", err)
			return 1
		}
		return 0
	}
	st, err := state.Open(cfg, state.Options{})
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	defer st.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := st.Run(ctx, op, target, n, stdout); err != nil {
		fmt.Fprintf(stderr, "mxguard state: %v\n", err)
		return 1
	}
	return 0
}

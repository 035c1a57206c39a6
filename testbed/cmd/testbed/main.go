// Command testbed starts and supervises the Kubernetes test bed: an embedded etcd, the real
// kube-apiserver and kube-controller-manager, and the node agent, all on 127.0.0.1. It is driven
// by scripts/testbed; see testbed/README.md.
//
//	testbed run  --state DIR --bin DIR --node-config FILE   (foreground; SIGTERM stops everything)
//	testbed ctl  --state DIR restart-apiserver|stop-apiserver|start-apiserver|status
//	testbed ctl  --state DIR node-lost NAME | node-restore NAME
package main

import (
	"flag"
	"fmt"
	"os"
)

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	var err error
	switch os.Args[1] {
	case "run":
		err = runCmd(os.Args[2:])
	case "ctl":
		err = ctlCmd(os.Args[2:])
	default:
		usage()
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "testbed %s: %v\n", os.Args[1], err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: testbed run --state DIR --bin DIR --node-config FILE | testbed ctl --state DIR COMMAND [ARG]")
	os.Exit(2)
}

func stateFlag(fs *flag.FlagSet) *string {
	def := os.Getenv("FLEXT_TESTBED_DIR")
	if def == "" {
		def = "/tmp/flext-testbed"
	}
	return fs.String("state", def, "state directory (certificates, kubeconfig, logs, etcd data)")
}

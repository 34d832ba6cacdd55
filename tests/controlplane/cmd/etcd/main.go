// Command etcd is the upstream etcd server. It is a module of its own: etcd's go.mod has replace
// directives (so `go install` refuses it), and its dependencies (gRPC, OpenTelemetry) are newer than
// the ones k8s.io/kubernetes was released with, which must not leak into the API server's build.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}

// Command kube-apiserver is the upstream API server from k8s.io/kubernetes, with the same
// registrations as upstream's own main package.
package main

import (
	"os"
	_ "time/tzdata" // CronJob spec.timeZone

	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"
	_ "k8s.io/component-base/metrics/prometheus/clientgo"
	_ "k8s.io/component-base/metrics/prometheus/version"
	"k8s.io/kubernetes/cmd/kube-apiserver/app"
)

func main() {
	os.Exit(cli.Run(app.NewAPIServerCommand()))
}

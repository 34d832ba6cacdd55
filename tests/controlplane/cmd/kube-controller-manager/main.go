// Command kube-controller-manager is the upstream controller manager from k8s.io/kubernetes
// (Job, CronJob, garbage collector, ...), with the same registrations as upstream's main package.
package main

import (
	"os"
	_ "time/tzdata" // CronJob spec.timeZone

	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"
	_ "k8s.io/component-base/metrics/prometheus/clientgo"
	_ "k8s.io/component-base/metrics/prometheus/version"
	"k8s.io/kubernetes/cmd/kube-controller-manager/app"
)

func main() {
	os.Exit(cli.Run(app.NewControllerManagerCommand()))
}

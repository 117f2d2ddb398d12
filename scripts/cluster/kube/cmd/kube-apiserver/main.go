// Command kube-apiserver runs the Kubernetes API server from the published k8s.io/kubernetes
// module (see ../../go.mod for why a wrapper module is needed).
package main

import (
	"os"

	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"
	"k8s.io/kubernetes/cmd/kube-apiserver/app"
)

func main() {
	os.Exit(cli.Run(app.NewAPIServerCommand()))
}

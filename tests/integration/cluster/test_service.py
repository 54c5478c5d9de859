"""kube-proxy (iptables mode) routes ClusterIP Services from the host and from pods."""
import urllib.request


def make_web(kube, namespace, replicas=2):
    k8s = kube.k8s
    script = ("mkdir -p /tmp/www && echo \"svc-ok $HOSTNAME\" > /tmp/www/index.html && "
              "exec httpd -f -p 8080 -h /tmp/www")
    labels = {"app": "web"}
    kube.apps.create_namespaced_deployment(namespace, k8s.V1Deployment(
        metadata=k8s.V1ObjectMeta(name="web"),
        spec=k8s.V1DeploymentSpec(
            replicas=replicas,
            selector=k8s.V1LabelSelector(match_labels=labels),
            template=k8s.V1PodTemplateSpec(
                metadata=k8s.V1ObjectMeta(labels=labels),
                # busybox httpd as PID 1 ignores SIGTERM: without a short grace period each pod holds the
                # namespace's deletion (the fixture's teardown) for the default 30 s.
                spec=k8s.V1PodSpec(termination_grace_period_seconds=1, containers=[k8s.V1Container(
                    name="httpd", image=kube.BUSYBOX, image_pull_policy="Never",
                    command=["sh", "-c", script],
                    ports=[k8s.V1ContainerPort(container_port=8080, name="http")],
                    readiness_probe=k8s.V1Probe(
                        http_get=k8s.V1HTTPGetAction(path="/", port="http"), period_seconds=1))])))))
    svc = kube.core.create_namespaced_service(namespace, k8s.V1Service(
        metadata=k8s.V1ObjectMeta(name="web"),
        spec=k8s.V1ServiceSpec(selector=labels, ports=[k8s.V1ServicePort(port=80, target_port="http")])))
    ip = svc.spec.cluster_ip
    assert ip and ip.startswith("10.96.0."), ip

    def endpoints_ready():
        ep = kube.core.read_namespaced_endpoints("web", namespace)
        addrs = [a.ip for s in (ep.subsets or []) for a in (s.addresses or [])]
        return addrs if len(addrs) == replicas else None

    pod_ips = kube.wait_for("2 ready endpoints behind service web", endpoints_ready, timeout=120)
    return ip, pod_ips


def get(url):
    with urllib.request.urlopen(url, timeout=5) as r:  # noqa: S310 - the test cluster's ClusterIP
        assert r.status == 200
        return r.read().decode()


def test_cluster_ip_routes_from_host_and_balances(kube, namespace):
    ip, pod_ips = make_web(kube, namespace)
    pods = {p.metadata.name for p in kube.core.list_namespaced_pod(namespace, label_selector="app=web").items}
    seen = set()

    def both_backends():
        body = kube.wait_for("http://%s/ from the host" % ip, lambda: get("http://%s/" % ip), timeout=60)
        assert body.startswith("svc-ok "), body
        seen.add(body.split()[1])
        return seen == pods

    kube.wait_for("both pods to answer through the ClusterIP", both_backends, timeout=60, interval=0.05)
    assert seen == pods


def test_cluster_ip_routes_from_a_pod(kube, namespace):
    ip = make_web(kube, namespace)[0]
    # busybox-static's wget -T crashes; timeout(1) bounds each try instead
    script = ("for i in 1 2 3 4 5 6 7 8 9 10; do timeout 5 wget -q -O- http://%s/ && exit 0; sleep 1; done; "
              "exit 1" % ip)
    log = kube.run_pod(namespace, "client", ["sh", "-c", script])
    assert log.startswith("svc-ok web-"), log

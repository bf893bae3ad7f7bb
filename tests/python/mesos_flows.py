"""A pymesos scheduler (pymesos 0.3.15, Mesos's v1 scheduler HTTP API) run
against an Agora master: subscribe, offers, a command task launched,
its updates acknowledged (pymesos does it), reconcile, kill, decline with a
filter, revive, and teardown when the driver stops.

    python mesos_flows.py 127.0.0.1:5050 'sleep 600' [docker-image]

With a Docker image, a Docker task runs too. Prints `ok` and exits 0 when
every step passed; otherwise the exception says which step failed.
"""

import json
import logging
import sys
import threading
import time
import urllib.request

from pymesos import MesosSchedulerDriver, Scheduler


def wait(what, check, timeout=60):
    end = time.time() + timeout
    last = None
    while time.time() < end:
        last = check()
        if last:
            return last
        time.sleep(0.1)
    raise SystemExit("timed out waiting for %s (last: %r)" % (what, last))


class Recorder(Scheduler):
    """Remembers what the driver reports."""

    def __init__(self):
        self.lock = threading.Lock()
        self.framework_id = None
        self.offers = []
        self.rescinded = set()
        self.updates = []
        self.errors = []

    def registered(self, driver, framework_id, master_info):
        self.framework_id = framework_id["value"]

    def resourceOffers(self, driver, offers):
        with self.lock:
            self.offers.extend(offers)

    def offerRescinded(self, driver, offer_id):
        with self.lock:
            self.rescinded.add(offer_id["value"])

    def statusUpdate(self, driver, update):
        with self.lock:
            self.updates.append(update)

    def error(self, driver, message):
        with self.lock:
            self.errors.append(message)

    def offer_count(self):
        with self.lock:
            return len(self.offers)

    def offers_from(self, n):
        with self.lock:
            return [o for o in self.offers[n:] if o["id"]["value"] not in self.rescinded]

    def update(self, task_id, state, since=0):
        with self.lock:
            for u in self.updates[since:]:
                if u["task_id"]["value"] == task_id and u["state"] == state:
                    return u
        return None

    def update_count(self):
        with self.lock:
            return len(self.updates)


def scalar(name, value):
    return dict(name=name, type="SCALAR", scalar=dict(value=value))


def task(task_id, offer, cmd, docker_image=None):
    t = dict(
        name=task_id,
        task_id=dict(value=task_id),
        agent_id=offer["agent_id"],
        resources=[scalar("cpus", 0.1), scalar("mem", 32)],
        command=dict(value=cmd),
    )
    if docker_image:
        t["container"] = dict(type="DOCKER", docker=dict(image=docker_image))
    return t


def cpus(offer):
    return sum(r["scalar"]["value"] for r in offer["resources"] if r["name"] == "cpus")


def state(master):
    with urllib.request.urlopen("http://%s/state" % master, timeout=10) as r:
        return json.loads(r.read().decode("utf-8"))


def main(master, cmd, docker_image=None):
    logging.basicConfig(level=logging.INFO)
    sched = Recorder()
    framework = dict(user="root", name="pymesos-flows", hostname="localhost", failover_timeout=60)
    driver = MesosSchedulerDriver(sched, framework, master, use_addict=False)
    driver.start()
    try:
        run(driver, sched, master, cmd, docker_image)
    finally:
        if sched.errors:
            print("errors: %r" % sched.errors)
    # Without failover=True the driver tears the framework down.
    driver.stop()
    driver.join()
    wait("the framework torn down", lambda: not state(master)["frameworks"])
    done = state(master)["completed_frameworks"]
    assert done and done[0]["id"] == sched.framework_id, done
    print("ok")


def run(driver, sched, master, cmd, docker_image):
    wait("registered", lambda: sched.framework_id)
    offer = wait("an offer with room", lambda: next(
        (o for o in sched.offers_from(0) if cpus(o) >= 0.2), None))
    assert offer["framework_id"]["value"] == sched.framework_id, offer

    # A command task (and a Docker one): pymesos acknowledges the updates.
    tasks = [task("t1", offer, cmd)]
    if docker_image:
        tasks.append(task("d1", offer, "echo hello from docker", docker_image))
    driver.launchTasks(offer["id"], tasks)
    running = wait("t1 TASK_RUNNING", lambda: sched.update("t1", "TASK_RUNNING"))
    assert running["agent_id"] == offer["agent_id"], running
    assert running.get("uuid"), running
    if docker_image:
        wait("d1 TASK_FINISHED", lambda: sched.update("d1", "TASK_FINISHED"))

    def acknowledged():
        fw = next((f for f in state(master)["frameworks"] if f["id"] == sched.framework_id), None)
        return fw and [t for t in fw["tasks"] if t["id"] == "t1" and t["state"] == "TASK_RUNNING"]

    wait("t1 running in /state", acknowledged)

    # Reconcile: the master answers with the task's state.
    since = sched.update_count()
    driver.reconcileTasks([dict(task_id=dict(value="t1"))])
    r = wait("reconciliation of t1", lambda: sched.update("t1", "TASK_RUNNING", since))
    assert r.get("reason") == "REASON_RECONCILIATION", r

    # Kill.
    since = sched.update_count()
    driver.killTask(dict(value="t1"))
    wait("t1 TASK_KILLED", lambda: sched.update("t1", "TASK_KILLED", since))

    # Decline everything with a long filter: nothing comes back, even past
    # the default filter of 5 s; revive brings the offers back. Offers on
    # their way while a round of declines goes out go in the next round.
    declined = set()
    for _ in range(5):
        mark = sched.offer_count()
        fresh = [o["id"] for o in sched.offers_from(0) if o["id"]["value"] not in declined]
        if fresh:
            driver.declineOffer(fresh, dict(refuse_seconds=3600))
            declined.update(i["value"] for i in fresh)
        time.sleep(7)
        if sched.offer_count() == mark:
            break
    else:
        raise SystemExit("offered again despite the filters: %r" % sched.offers)
    mark = sched.offer_count()
    driver.reviveOffers()
    wait("an offer after revive", lambda: sched.offer_count() > mark)
    assert not sched.errors, sched.errors


if __name__ == "__main__":
    main(*sys.argv[1:])

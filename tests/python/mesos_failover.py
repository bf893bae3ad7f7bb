"""A pymesos scheduler (pymesos 0.3.15) that finds the leading Agora master
through ZooKeeper and follows a leader failover, as it would with Mesos.

    python mesos_failover.py zk://127.0.0.1:2181/agora 'sleep 600'

1. Subscribes through `zk://` (pymesos reads the lowest `json.info_` node),
   launches one long task and waits for TASK_RUNNING; prints
   `running <framework id> <master>`.
2. The test then SIGKILLs that master. The driver learns the new leader
   from ZooKeeper and subscribes again with its framework id; the script
   waits for `reregistered`, checks that the id is the same and the master
   another, reconciles the task (TASK_RUNNING, REASON_RECONCILIATION) and
   checks that nothing ended it; prints `reconciled <master>`.
3. It waits for a line on stdin (the test checked the new leader's state),
   stops the driver (which tears the framework down) and prints `ok`.

Any failed step exits non-zero with the reason.
"""

import logging
import sys
import threading
import time

from pymesos import MesosSchedulerDriver, Scheduler

TASK = "long-1"


def wait(what, check, timeout=90):
    end = time.time() + timeout
    last = None
    while time.time() < end:
        last = check()
        if last:
            return last
        time.sleep(0.1)
    raise SystemExit("timed out waiting for %s (last: %r)" % (what, last))


class Recorder(Scheduler):
    def __init__(self):
        self.lock = threading.Lock()
        self.framework_ids = []
        self.reregistrations = []
        self.offers = []
        self.updates = []
        self.errors = []

    def registered(self, driver, framework_id, master_info):
        with self.lock:
            self.framework_ids.append(framework_id["value"])

    def reregistered(self, driver, master_info):
        with self.lock:
            self.reregistrations.append((driver.framework_id, driver.master))

    def resourceOffers(self, driver, offers):
        with self.lock:
            self.offers.extend(offers)

    def statusUpdate(self, driver, update):
        with self.lock:
            self.updates.append(update)

    def error(self, driver, message):
        with self.lock:
            self.errors.append(message)

    def first_offer(self):
        with self.lock:
            return self.offers[0] if self.offers else None

    def update(self, state, since=0):
        with self.lock:
            for u in self.updates[since:]:
                if u["task_id"]["value"] == TASK and u["state"] == state:
                    return u
        return None

    def count(self):
        with self.lock:
            return len(self.updates)

    def states(self):
        with self.lock:
            return [u["state"] for u in self.updates if u["task_id"]["value"] == TASK]


def scalar(name, value):
    return dict(name=name, type="SCALAR", scalar=dict(value=value))


def main(zk, cmd):
    logging.basicConfig(level=logging.INFO)
    sched = Recorder()
    framework = dict(user="root", name="pymesos-failover", hostname="localhost",
                     failover_timeout=3600)
    driver = MesosSchedulerDriver(sched, framework, zk, use_addict=False)
    driver.start()

    wait("registered through ZooKeeper", lambda: sched.framework_ids)
    framework_id = sched.framework_ids[0]
    first_master = driver.master
    offer = wait("an offer", sched.first_offer)
    driver.launchTasks(offer["id"], [dict(
        name=TASK,
        task_id=dict(value=TASK),
        agent_id=offer["agent_id"],
        resources=[scalar("cpus", 0.1), scalar("mem", 32)],
        command=dict(value=cmd),
    )])
    wait("%s TASK_RUNNING" % TASK, lambda: sched.update("TASK_RUNNING"))
    print("running %s %s" % (framework_id, first_master), flush=True)

    # The test kills the leader now; the driver finds the next one.
    rereg = wait("resubscribed to a new leader", lambda: sched.reregistrations)
    fid, master = rereg[0]
    assert fid == framework_id, (fid, framework_id)
    assert master != first_master, (master, first_master)
    assert sched.framework_ids == [framework_id], sched.framework_ids

    since = sched.count()
    driver.reconcileTasks([dict(task_id=dict(value=TASK))])
    r = wait("reconciliation of %s" % TASK, lambda: sched.update("TASK_RUNNING", since))
    assert r.get("reason") == "REASON_RECONCILIATION", r
    states = sched.states()
    assert all(s in ("TASK_STAGING", "TASK_STARTING", "TASK_RUNNING") for s in states), states
    assert not sched.errors, sched.errors
    print("reconciled %s" % master, flush=True)

    sys.stdin.readline()
    driver.stop()
    driver.join()
    print("ok", flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:])

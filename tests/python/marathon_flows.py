"""The main flows of the services framework driven by the Python `marathon`
client (0.13), which refuses any response key it does not know.

    python marathon_flows.py http://127.0.0.1:8080 'sleep 600'

Prints `ok` and exits 0 when every step passed; otherwise the exception
says which step failed.
"""

import sys
import threading
import time

from marathon import MarathonClient
from marathon.models import MarathonApp
from marathon.models.events import MarathonDeploymentSuccess


def wait(what, check, timeout=60):
    end = time.time() + timeout
    last = None
    while time.time() < end:
        last = check()
        if last:
            return last
        time.sleep(0.2)
    raise SystemExit("timed out waiting for %s (last: %r)" % (what, last))


def settled(client, app_id, n):
    app = client.get_app(app_id, embed_tasks=True)
    return app.tasks_running == n and len(app.tasks) == n and not app.deployments and app


def main(url, cmd):
    c = MarathonClient(url)
    assert c.ping().strip() in (b"pong", "pong"), c.ping()
    info = c.get_info()
    assert info.name == "agora-services", info.name
    assert info.elected, "the instance leads"
    assert c.get_leader()

    # The event stream, read in a thread: deployments succeed.
    successes = []

    def listen():
        for event in c.event_stream(event_types=["deployment_success"]):
            if isinstance(event, MarathonDeploymentSuccess):
                successes.append(event)

    threading.Thread(target=listen, daemon=True).start()
    time.sleep(0.5)

    app = c.create_app("/py/web", MarathonApp(cmd=cmd, cpus=0.1, mem=16, instances=2,
                                              labels={"team": "py"}))
    assert app and app.id == "/py/web", app
    wait("two tasks", lambda: settled(c, "/py/web", 2))
    apps = c.list_apps(embed_tasks=True, embed_counts=True, label="team==py")
    assert [a.id for a in apps] == ["/py/web"], apps

    c.scale_app("/py/web", instances=3)
    wait("three tasks", lambda: settled(c, "/py/web", 3))
    tasks = c.list_tasks("/py/web")
    assert len(tasks) == 3, tasks
    assert all(t.host for t in tasks)

    c.kill_task("/py/web", tasks[0].id, scale=True)
    wait("two tasks after a kill with scale", lambda: settled(c, "/py/web", 2))
    assert c.get_app("/py/web").instances == 2

    update = MarathonApp(cmd=cmd, cpus=0.1, mem=16, instances=2, env={"V": "2"})
    c.update_app("/py/web", update)
    upgraded = wait("the upgrade", lambda: (lambda a: a.env.get("V") == "2" and a)(
        settled(c, "/py/web", 2) or MarathonApp(env={})))
    assert all(t.version == upgraded.version for t in upgraded.tasks), upgraded.tasks

    versions = c.list_versions("/py/web")
    assert len(versions) >= 3, versions
    first = c.get_version("/py/web", versions[-1])
    assert first.instances == 2 and not first.env, first

    c.restart_app("/py/web")
    wait("the restart", lambda: settled(c, "/py/web", 2))
    assert c.list_deployments() == [] or all(not d.affected_apps for d in c.list_deployments())
    assert c.list_queue() == []

    c.delete_app("/py/web")
    wait("the app gone", lambda: c.list_apps() == [])
    wait("deployment_success events", lambda: len(successes) >= 4)
    print("ok")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])

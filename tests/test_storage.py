"""The database module: schema, migrations, messages and full-text search (unit)."""

import sqlite3

from mecli.db import MIGRATIONS, Store


def test_migrations_apply_once(tmp_path):
    path = tmp_path / "me.db"
    s = Store(path)
    assert s.schema_version() == len(MIGRATIONS)
    s.close()
    s = Store(path)  # reopening applies nothing twice
    assert s.schema_version() == len(MIGRATIONS)
    s.close()


def test_file_created_private(tmp_path):
    path = tmp_path / "sub" / "me.db"
    Store(path).close()
    assert path.stat().st_mode & 0o777 == 0o600


def test_messages_and_fts(tmp_path):
    s = Store(tmp_path / "me.db")
    cid = s.new_conversation()
    a = s.add_message(cid, "user", "How do I bake sourdough bread?")
    b = s.add_message(cid, "assistant", "Feed the starter, then proof overnight.")
    assert [m.id for m in s.conversation_messages(cid)] == [a, b]
    assert s.conversations(5)[0]["title"] == "How do I bake sourdough bread?"
    assert [mid for mid, _ in s.fts_search('"sourdough"', 5)] == [a]
    assert s.latest_assistant_message().id == b
    s.close()


def test_two_connections_can_write(tmp_path):
    path = tmp_path / "me.db"
    s1, s2 = Store(path), Store(path)
    c1, c2 = s1.new_conversation(), s2.new_conversation()
    s1.add_message(c1, "user", "one")
    s2.add_message(c2, "user", "two")
    assert s1.counts()["messages"] == 2
    s1.close()
    s2.close()


def test_failed_transaction_leaves_nothing(tmp_path):
    s = Store(tmp_path / "me.db")
    cid = s.new_conversation()
    try:
        s.add_message(cid, "robot", "not a role")
    except sqlite3.Error:
        pass
    except Exception:
        pass
    assert s.counts()["messages"] == 0
    assert s.fts_search('"role"', 5) == []
    s.close()


def test_unwritable_data_dir_is_a_clear_error(me, me_env, tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    r = me("history", env={"ME_HOME": str(ro / "inner")})
    ro.chmod(0o700)
    # root ignores permissions; then the command simply works
    assert r.returncode in (0, 1)
    if r.returncode == 1:
        assert "cannot" in r.stderr and "Traceback" not in r.stderr

"""The chat tab (issue 12, items 2 and 3) over a scripted completion client and the real store.

Each answer is a script (``chat_fixtures.ScriptedClient``) whose pauses let the test look at
the tab mid-answer: the text shown so far, the progress line, Stop. What the tab shows is
checked against what the SQLite store kept. ``test_chat_tab_proxy.py`` runs the same tab
through the real proxy to fake vLLM servers.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtGui import QShowEvent
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QApplication, QLineEdit, QToolButton

from ryx_desktop.config import Config
from ryx_desktop.core.chat import ChatDelta, ChatProgress, ChatRequestError, CompletionUsage
from ryx_desktop.ui._chat_list import UNTITLED
from ryx_desktop.ui._chat_view import MessageView
from tests.gui.chat_fixtures import MODELS, ChatRig, chat_rig, summary
from tests.gui.fixtures_engine import managed, run_on_qt
from tests.support.chat_script import Pause, Tick
from tests.support.waiting import wait_for


def headers(rig: ChatRig) -> list[str]:
    return [view.header() for view in rig.tab.transcript.views()]


def texts(rig: ChatRig) -> list[str]:
    return [view.text() for view in rig.tab.transcript.views()]


def last(rig: ChatRig) -> MessageView:
    return rig.tab.transcript.views()[-1]


async def exchange(rig: ChatRig, text: str, answer: str) -> None:
    """Send ``text``; the scripted model answers ``answer`` at once."""
    rig.client.play(ChatDelta(answer))
    task = rig.tab.send(text)
    assert task is not None
    await task


def test_the_answer_streams_in_with_progress_then_its_timing(
    qapp: QApplication, tmp_path: Path
) -> None:
    loading, first, second = Pause(), Pause(), Pause()

    async def scenario() -> None:
        async with chat_rig(tmp_path) as rig:
            tab = rig.tab
            assert tab.current_model() == "alpha"  # the selected model
            assert tab.model_box.currentText() == "Alpha (alpha)"
            rig.client.play(
                ChatProgress("loading alpha: 40 % (weights 2/5)"),
                loading,
                Tick(0.42),
                ChatDelta("Hel"),
                first,
                Tick(0.5),
                ChatDelta("lo"),
                second,
                Tick(0.5),
                ChatDelta(" there"),
                CompletionUsage(completion_tokens=3),
            )
            tab.input.setPlainText("hi")
            task = tab.send()
            assert task is not None
            assert tab.input.toPlainText() == ""
            await loading.reached.wait()
            assert tab.status_text() == "loading alpha: 40 % (weights 2/5)"
            assert headers(rig) == ["You · alpha", "Assistant · alpha · answering…"]
            assert last(rig).note() == "loading alpha: 40 % (weights 2/5)"
            assert tab.stop_button.isEnabled() and not tab.send_button.isEnabled()
            assert tab.send("another") is None  # one answer at a time

            loading.release.set()
            await first.reached.wait()
            await wait_for(lambda: last(rig).shown_text() == "Hel", "the first piece shown")
            assert last(rig).note() == ""  # the progress line made way for the answer
            first.release.set()
            await second.reached.wait()
            await wait_for(lambda: last(rig).shown_text() == "Hello", "the second piece shown")
            second.release.set()
            await task

            assert texts(rig) == ["hi", "Hello there"]
            assert last(rig).shown_text() == "Hello there"
            assert headers(rig) == ["You · alpha", "Assistant · alpha"]
            timing = "time to first token 0.42 s · 2.0 tokens/s"
            assert last(rig).note() == timing
            assert tab.status_text() == f"alpha: {timing}"
            assert tab.send_button.isEnabled() and not tab.stop_button.isEnabled()
            # Kept: the conversation, titled by its first message, is listed and shown.
            assert tab.conversations.titles() == ["hi"]
            assert tab.conversations.current_id() == tab.current_conversation
            stored = await rig.messages(tab.current_conversation)
            assert summary(stored) == [
                ("user", "hi", "alpha", "complete"),
                ("assistant", "Hello there", "alpha", "complete"),
            ]

    run_on_qt(qapp, scenario())


def test_stop_cancels_the_answer_and_keeps_it_as_cut(qapp: QApplication, tmp_path: Path) -> None:
    stuck = Pause()  # never released: only Stop ends this answer

    async def scenario() -> None:
        async with chat_rig(tmp_path) as rig:
            tab = rig.tab
            rig.client.play(ChatDelta("Once upon"), ChatDelta(" a time"), stuck)
            task = tab.send("tell me a story")
            assert task is not None
            await stuck.reached.wait()
            await wait_for(lambda: last(rig).shown_text() == "Once upon a time", "the answer")
            tab.stop_button.click()
            await task  # Stop ends the task normally
            assert not task.cancelled()
            assert rig.client.ended == ["cancelled"]
            assert headers(rig)[-1] == "Assistant · alpha · ✂ cut"
            assert last(rig).text() == "Once upon a time"
            assert "cut" in tab.status_text()
            assert not tab.answering and tab.send_button.isEnabled()
            stored = await rig.messages(tab.current_conversation)
            assert summary(stored)[-1] == ("assistant", "Once upon a time", "alpha", "cut")
            # Reopened from the store, it still says so.
            await tab.open_conversation(stored[0].conversation_id)
            assert headers(rig) == ["You · alpha", "Assistant · alpha · ✂ cut"]
            # And the conversation goes on: the cut answer is part of the history.
            await exchange(rig, "go on", "there was a model")
            assert rig.client.calls[-1][1] == [
                {"role": "user", "content": "tell me a story"},
                {"role": "assistant", "content": "Once upon a time"},
                {"role": "user", "content": "go on"},
            ]

    run_on_qt(qapp, scenario())


def test_switching_the_model_mid_conversation_sends_the_history_to_it(
    qapp: QApplication, tmp_path: Path
) -> None:
    async def scenario() -> None:
        async with chat_rig(tmp_path) as rig:
            tab = rig.tab
            await exchange(rig, "hi", "hello from alpha")
            conversation = tab.current_conversation
            tab.model_box.setCurrentIndex(tab.model_box.findData("beta"))
            tab.model_box.activated.emit(tab.model_box.currentIndex())  # as a user's pick does
            await exchange(rig, "and you?", "beta here")
            assert tab.current_conversation == conversation
            assert rig.client.calls[-1] == (
                "beta",
                [
                    {"role": "user", "content": "hi"},
                    {"role": "assistant", "content": "hello from alpha"},
                    {"role": "user", "content": "and you?"},
                ],
            )
            assert headers(rig) == [
                "You · alpha",
                "Assistant · alpha",
                "You · beta",
                "Assistant · beta",
            ]
            stored = await rig.messages(conversation)
            assert [(m.role, m.model) for m in stored] == [
                ("user", "alpha"),
                ("assistant", "alpha"),
                ("user", "beta"),
                ("assistant", "beta"),
            ]
            # The user's pick stays while the selection changes elsewhere.
            rig.engine.bridge.select("alpha")
            assert tab.current_model() == "beta"

    run_on_qt(qapp, scenario())


def test_the_model_picker_follows_the_selection_and_the_config(
    qapp: QApplication, tmp_path: Path
) -> None:
    async def scenario() -> None:
        async with chat_rig(tmp_path) as rig:
            tab = rig.tab
            assert tab.models() == ["alpha", "beta"]
            rig.engine.bridge.select("beta")
            assert tab.current_model() == "beta"  # not picked by the user: follows
            new = {"alpha": MODELS["alpha"], "gamma": managed(8003, gpu_memory_utilization=0.2)}
            await rig.engine.supervisor.reconfigure(
                Config.model_validate({"models": new, "default_model": "alpha"})
            )
            assert tab.models() == ["alpha", "gamma"]
            assert tab.current_model() == "alpha"  # beta is gone: back to the selected one
            tab.set_model("gamma")
            await rig.engine.supervisor.reconfigure(
                Config.model_validate({"models": MODELS, "default_model": "alpha"})
            )
            assert tab.models() == ["alpha", "beta"]
            assert tab.current_model() == "alpha"
            await rig.engine.supervisor.reconfigure(
                Config.model_validate({"models": {}, "default_model": None})
            )
            assert tab.models() == [] and tab.current_model() is None
            assert not tab.send_button.isEnabled()
            assert tab.send("hi") is None
            assert "No model" in tab.status_text()

    run_on_qt(qapp, scenario())


def test_copy_puts_a_message_on_the_clipboard(qapp: QApplication, tmp_path: Path) -> None:
    async def scenario() -> None:
        async with chat_rig(tmp_path) as rig:
            await exchange(rig, "what is 2+2?", "4, of course")
            assert rig.tab.copy_message(0) == "what is 2+2?"
            answer = last(rig)
            button = answer.findChild(QToolButton, "message-copy")
            assert button is not None
            button.click()
            copy_action = answer.menu.actions()[0]
            assert copy_action.text() == "Copy"
            copy_action.trigger()  # the right-click menu's Copy
            assert rig.clipboard.texts == ["what is 2+2?", "4, of course", "4, of course"]

    run_on_qt(qapp, scenario())


def test_conversations_are_listed_opened_renamed_and_deleted(
    qapp: QApplication, tmp_path: Path
) -> None:
    async def scenario() -> None:
        async with chat_rig(tmp_path) as rig:
            tab, listed = rig.tab, rig.tab.conversations
            await exchange(rig, "first question", "first answer")
            first = tab.current_conversation
            tab.conversations.new_button.click()
            assert tab.current_conversation is None and texts(rig) == []
            await exchange(rig, "second question", "second answer")
            second = tab.current_conversation
            assert listed.ids() == [second, first]  # most recent first
            assert listed.titles() == ["second question", "first question"]

            # A click on the older one opens it.
            listed.list.setCurrentRow(1)
            assert tab.current_conversation == first
            await wait_for(lambda: texts(rig) == ["first question", "first answer"], "it")

            # Renamed from the tab...
            await tab.rename(first, "Arithmetic")
            assert listed.titles() == ["Arithmetic", "second question"]  # renamed: updated
            # ...and in place, as the item's editor does.
            item = listed.list.item(listed.ids().index(second))
            item.setText("  Poetry  ")
            await wait_for(lambda: "Poetry" in listed.titles(), "the title edited in place")
            assert rig.tab.current_conversation == first  # editing opened nothing
            found = await rig.store.get(second)
            assert found is not None and found[0].title == "Poetry"
            item = listed.list.item(listed.ids().index(second))
            item.setText("   ")  # no title: not a rename
            assert item.text() == "Poetry"

            # Delete asks first; No keeps it.
            listed.list.setCurrentRow(listed.ids().index(first))
            rig.confirm.answers = [False, True]
            task = tab.delete()
            assert task is not None
            assert await task is False
            assert rig.confirm.questions[-1][1] == "Delete “Arithmetic” and its messages?"
            assert first in listed.ids()
            listed.delete_button.click()
            await wait_for(lambda: first not in listed.ids(), "the conversation deleted")
            assert await rig.store.get(first) is None
            assert tab.current_conversation is None and texts(rig) == []
            assert listed.ids() == [second]

    run_on_qt(qapp, scenario())


def test_a_new_conversation_is_listed_untitled_until_its_title_is_stored(
    qapp: QApplication, tmp_path: Path
) -> None:
    hold = Pause()

    async def scenario() -> None:
        async with chat_rig(tmp_path) as rig:
            await rig.store.create("")  # e.g. from the sessions API, no message yet
            await rig.tab.refresh()
            assert rig.tab.conversations.titles() == [UNTITLED]
            rig.client.play(hold, ChatDelta("ok"))
            task = rig.tab.send("hello there")
            assert task is not None
            await hold.reached.wait()
            assert rig.tab.conversations.current_id() == rig.tab.current_conversation
            hold.release.set()
            await task
            assert rig.tab.conversations.titles() == ["hello there", UNTITLED]

    run_on_qt(qapp, scenario())


def test_a_failure_shows_in_the_transcript_with_its_hint(
    qapp: QApplication, tmp_path: Path
) -> None:
    async def scenario() -> None:
        async with chat_rig(tmp_path) as rig:
            tab = rig.tab
            rig.client.play(
                ChatDelta("Par"),
                ChatRequestError(
                    "the model's server stopped mid-answer", hint="Start alpha again.", status=502
                ),
            )
            task = tab.send("hi")
            assert task is not None
            await task
            assert headers(rig)[-1] == "Assistant · alpha · ⚠ failed"
            assert last(rig).text() == "Par"
            assert last(rig).note() == "the model's server stopped mid-answer\nStart alpha again."
            assert "Start alpha again." in tab.status_text()
            stored = await rig.messages(tab.current_conversation)
            assert (stored[-1].state, stored[-1].error) == (
                "failed",
                "the model's server stopped mid-answer",
            )
            # Reopened, the reason is still there (the hint is not kept).
            await tab.open_conversation(stored[0].conversation_id)
            assert last(rig).note() == "the model's server stopped mid-answer"

            # The conversation deleted elsewhere (the sessions API): refused, with its hint.
            conversation = tab.current_conversation
            assert conversation is not None
            assert await rig.store.delete(conversation)
            task = tab.send("still there?")
            assert task is not None
            await task
            assert last(rig).header() == "Assistant · alpha · ⚠ failed"
            assert f"there is no conversation {conversation!r}" in last(rig).note()
            assert "start a new conversation" in last(rig).note()
            assert "start a new conversation" in tab.status_text()
            assert tab.conversations.ids() == []

    run_on_qt(qapp, scenario())


def test_ctrl_enter_sends_and_enter_alone_does_not(qapp: QApplication, tmp_path: Path) -> None:
    async def scenario() -> None:
        async with chat_rig(tmp_path) as rig:
            tab = rig.tab
            rig.client.play(ChatDelta("pong"))
            QTest.keyClicks(tab.input, "ping")
            QTest.keyClick(tab.input, Qt.Key.Key_Return)
            assert tab.input.toPlainText() == "ping\n" and not tab.answering
            QTest.keyClick(tab.input, Qt.Key.Key_Return, Qt.KeyboardModifier.ControlModifier)
            assert tab.answering and tab.input.toPlainText() == ""
            await wait_for(lambda: not tab.answering, "the answer")
            assert texts(rig) == ["ping\n", "pong"]

    run_on_qt(qapp, scenario())


def test_another_conversation_can_be_read_while_an_answer_streams(
    qapp: QApplication, tmp_path: Path
) -> None:
    middle = Pause()

    async def scenario() -> None:
        async with chat_rig(tmp_path) as rig:
            tab = rig.tab
            await exchange(rig, "old question", "old answer")
            old = tab.current_conversation
            tab.new_conversation()
            rig.client.play(ChatDelta("streaming "), middle, ChatDelta("on"))
            task = tab.send("new question")
            assert task is not None
            await middle.reached.wait()
            live = tab.current_conversation
            assert old is not None and live is not None
            await tab.open_conversation(old)
            assert texts(rig) == ["old question", "old answer"]
            assert not tab.send_button.isEnabled() and tab.stop_button.isEnabled()
            await tab.open_conversation(live)  # back: the live answer with its text so far
            assert texts(rig) == ["new question", "streaming "]
            assert headers(rig)[-1] == "Assistant · alpha · answering…"
            middle.release.set()
            await task
            assert texts(rig) == ["new question", "streaming on"]
            assert headers(rig)[-1] == "Assistant · alpha"

    run_on_qt(qapp, scenario())


def test_a_title_is_renamed_in_its_editor_and_the_list_waits_for_it(
    qapp: QApplication, tmp_path: Path
) -> None:
    async def scenario() -> None:
        async with chat_rig(tmp_path) as rig:
            tab, listed = rig.tab, rig.tab.conversations
            await exchange(rig, "one", "1")
            tab.new_conversation()
            await exchange(rig, "two", "2")
            await rig.store.create("from the sessions API")
            QApplication.sendEvent(tab, QShowEvent())  # each time the tab shows, it reloads
            await wait_for(lambda: len(listed.ids()) == 3, "the list reloaded")
            listed.select(listed.ids()[1])
            listed.rename_button.click()  # edits the current conversation's title
            editor = listed.list.viewport().findChild(QLineEdit)
            assert editor is not None and editor.text() == "two"
            # A refresh while the user types does not pull the editor away...
            await rig.store.rename(listed.ids()[2], "renamed elsewhere")
            await tab.refresh()
            assert listed.titles() == ["from the sessions API", "two", "one"]
            assert listed.list.viewport().findChild(QLineEdit) is editor
            editor.selectAll()
            QTest.keyClicks(editor, "Second")
            QTest.keyClick(editor, Qt.Key.Key_Return)
            # ...the list catches up once it closes, and the new title is stored.
            await wait_for(lambda: listed.titles()[0] == "Second", "the title stored")
            assert listed.titles() == ["Second", "renamed elsewhere", "from the sessions API"]
            found = await rig.store.get(listed.ids()[0])
            assert found is not None and found[0].title == "Second"

    run_on_qt(qapp, scenario())

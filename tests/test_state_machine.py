import itertools

from orderwatch.engine import state_machine as sm


def test_happy_path_is_legal():
    path = [None, "pending_payment", "paid", "pending_review", "awaiting_shipment", "shipped",
            "delivered", "pending_settlement", "completed"]
    for prev, new in itertools.pairwise(path):
        assert sm.is_legal(prev, new), (prev, new)


def test_review_is_optional_and_refunds_and_cancellation_belong():
    assert sm.is_legal("paid", "awaiting_shipment")
    assert sm.is_legal("pending_payment", "cancelled")
    assert sm.is_legal("shipped", "refunding")
    assert sm.is_legal("refunding", "refunded")


def test_illegal_jumps():
    assert not sm.is_legal("pending_payment", "shipped")
    assert not sm.is_legal("shipped", "awaiting_shipment")  # the ERP ghost loop
    assert not sm.is_legal("cancelled", "paid")
    assert not sm.is_legal(None, "paid")


def test_staying_put_is_legal_and_finished_states():
    assert all(sm.is_legal(s, s) for s in sm.STATUSES)
    assert {"completed", "cancelled", "refunded"} == sm.FINISHED
    assert sm.WAITS["pending_review"].limit_s == 2 * 3600


def test_every_action_leads_somewhere_legal():
    for action, (sources, target) in sm.ACTIONS.items():
        if target is None:
            continue
        for source in sources:
            assert sm.is_legal(source, target), (action, source, target)

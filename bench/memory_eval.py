"""A retrieval evaluation set for agent memory, and its evaluator (issue 13).

    python3 bench/memory_eval.py                 # BM25 (FTS5) and the hashing baseline
    python3 bench/memory_eval.py --dump set.jsonl  # write the set (entries, then questions)
    python3 bench/memory_eval.py --stats

The set imitates the public long-conversation benchmarks the project is measured on:
several users, each with one long conversation split into sessions, one memory entry
per turn stored verbatim, and questions whose evidence turns are known. Search is
scoped to one user's entries (one agent's memory), and the figure is turn-level
recall@10 of the evidence.

It is synthetic (a fixed seed, so every run builds the same set) but not trivially
lexical, because a set where the question repeats the evidence's words only measures
BM25:

- a fact is stated in one user turn with one of several wordings, and asked about
  with a paraphrase that mostly avoids the statement's content words (``sister`` ->
  ``sibling``, ``moved to`` -> ``relocate``, ``beagle`` -> ``dog``);
- the same kind of fact is also told about other people (a coworker's move, a
  neighbour's parrot), so the words the question does share also point elsewhere;
- the assistant answers each fact with a turn on the same topic that does not carry
  the fact itself, and ordinary chat (weather, work, cooking) fills the sessions;
- some facts change later ("she moved again, to Porto"); both turns are evidence.

Only the standard library is needed here (sqlite3 with FTS5); the embedders that use
this set live in bench/embedders.py and run in their own virtual environment.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import random
import re
import sqlite3
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

SEED = 13
K = 10
PARAPHRASED = 0.5  # the share of questions asked with paraphrases

# Each fact kind: the slot values, the wordings of the statement (user turn), the
# paraphrased questions, a third-person wording for other people (distractors), the
# assistant's on-topic reply (no value), and optionally how the fact is updated later.
# {who} is the speaker's relative/partner; {val} the value; {alt} the updated value.
FACTS: list[dict[str, object]] = [
    {
        "kind": "relocation",
        "ask_lex": ['Where did my {who} move to?', 'Which city is my {who} living in?'],
        "who": [("sister", "sibling"), ("brother", "sibling"), ("mom", "mother"),
                ("dad", "father"), ("best friend", "closest pal")],
        "val": ["Lisbon", "Denver", "Osaka", "Nairobi", "Montreal", "Krakow", "Perth"],
        "say": ["My {who} just moved to {val} for a new job.",
                "Big news in the family: my {who} packed up and relocated to {val}.",
                "My {who} has been living in {val} since last month, still unpacking boxes."],
        "ask": ["Which city did my {who2} settle in?",
                "Where does my {who2} live now?"],
        "other": ["My coworker moved to {val} last year and hates the winters.",
                  "A guy from the gym just moved to {val}, he keeps posting photos."],
        "reply": ["That's a big change! How are they finding the new place so far?",
                  "Moving to a new city can take a while to adjust to. Do you plan to visit?"],
        "update": "Update on my {who}: they moved again, this time to {alt}.",
    },
    {
        "kind": "pet",
        "ask_lex": ["What did we name the dog we adopted?",
                    "What is the name of our new pet from the shelter?"],
        "who": [("", "")],
        "val": ["beagle", "corgi", "labrador", "dachshund", "greyhound", "poodle"],
        "say": ["We finally adopted a {val} from the shelter and named him {name}.",
                "Meet {name}, our new {val}! He chewed my slippers on day one."],
        "ask": ["What is my dog called?", "What name did we give the puppy we got?"],
        "other": ["My neighbour's parrot is named {name} and it whistles all day.",
                  "The shelter had a cat called {name} that I almost took home."],
        "reply": ["Adopting an animal is such a commitment. How is the training going?",
                  "Shelter animals can take a few weeks to settle. Is he sleeping well?"],
    },
    {
        "kind": "instrument",
        "ask_lex": ['What lessons did I sign up for?', 'What am I practising every night?'],
        "who": [("", "")],
        "val": ["cello", "violin", "piano", "ukulele", "saxophone", "trumpet"],
        "say": ["I signed up for {val} lessons on Tuesday evenings.",
                "Practising the {val} for half an hour every night is hurting my fingers."],
        "ask": ["What musical instrument am I learning to play?",
                "Which instrument did I take up recently?"],
        "other": ["My nephew plays the {val} in the school band, it's loud.",
                  "There was a street musician with a {val} outside the station today."],
        "reply": ["Learning something new as an adult takes patience. Keep practising!",
                  "Evening lessons are a nice routine. Do you have a good teacher?"],
    },
    {
        "kind": "allergy",
        "ask_lex": ["What did the doctor confirm I'm allergic to?", 'What am I allergic to?'],
        "who": [("", "")],
        "val": ["peanuts", "shellfish", "kiwi", "sesame", "eggs", "strawberries"],
        "say": ["The doctor confirmed I'm allergic to {val}, so no more of that for me.",
                "Found out the hard way that {val} make my throat swell up."],
        "ask": ["What food do I have to avoid because of my reaction to it?",
                "Which ingredient triggers my allergy?"],
        "other": ["The bakery started putting {val} in everything, annoying.",
                  "My colleague brought a salad with {val} to the picnic."],
        "reply": ["That must have been scary. Do you carry an epinephrine pen now?",
                  "Reading labels gets easier with time. Restaurants usually help too."],
    },
    {
        "kind": "car",
        "ask_lex": ['What car did we buy?', 'What did we trade the old hatchback in for?'],
        "who": [("", "")],
        "val": ["Subaru Outback", "Honda Civic", "Tesla Model 3", "Volvo XC60",
                "Toyota Prius", "Ford Ranger"],
        "say": ["We traded in the old hatchback and bought a {val}.",
                "Picked up the keys to our {val} this morning!"],
        "ask": ["What vehicle am I driving these days?",
                "Which automobile did we purchase?"],
        "other": ["Someone scratched a {val} in the parking lot at work.",
                  "The rental company gave my boss a {val} for his trip."],
        "reply": ["Congratulations on the new wheels! How does it handle on the highway?",
                  "Buying a vehicle is a big decision. Did the dealer give you a fair price?"],
    },
    {
        "kind": "job",
        "ask_lex": ['Which offer did I accept?', 'Where did I start as a data analyst?'],
        "who": [("", "")],
        "val": ["Northwind", "Globex", "Initech", "Umbrella Labs", "Vandelay Imports",
                "Stark Logistics"],
        "say": ["I accepted the offer from {val}, starting as a data analyst in March.",
                "First week at {val} done, the onboarding was chaotic."],
        "ask": ["Which company am I employed at now?", "Who is my new employer?"],
        "other": ["{val} was in the news today for layoffs.",
                  "My cousin interviewed at {val} but turned them down."],
        "reply": ["A new role is exciting. How are your colleagues so far?",
                  "The first weeks in a job are always a lot. Be kind to yourself."],
    },
    {
        "kind": "trip",
        "ask_lex": ['Where are we going for our anniversary?', 'Where did we book flights to?'],
        "who": [("wife", "spouse"), ("husband", "spouse"), ("partner", "significant other")],
        "val": ["Iceland", "Portugal", "Vietnam", "Peru", "Morocco", "New Zealand"],
        "say": ["My {who} and I booked flights to {val} for our anniversary in June.",
                "Counting the days until {val}, it's our anniversary trip with my {who}."],
        "ask": ["Where are my {who2} and I going on holiday?",
                "What destination did we choose for the anniversary vacation?"],
        "other": ["My manager just got back from {val} with a terrible sunburn.",
                  "Saw a documentary about {val} last night, looked beautiful."],
        "reply": ["What a lovely way to celebrate! Have you planned the itinerary?",
                  "Anniversary trips are special. Do you need tips on packing?"],
        "update": "Change of plans: the anniversary trip is now to {alt} instead.",
    },
    {
        "kind": "book",
        "ask_lex": ['What book am I reading?', 'What am I reading on the train?'],
        "who": [("", "")],
        "val": ["Middlemarch", "Dune", "The Overstory", "Beloved", "Piranesi",
                "Station Eleven"],
        "say": ["I'm halfway through {val} and can't put it down.",
                "Started reading {val} on the train, the first chapter is slow."],
        "ask": ["What novel am I currently in the middle of?",
                "Which book have I been reading lately?"],
        "other": ["My book club voted against {val} again.",
                  "The library had a display of {val} copies by the entrance."],
        "reply": ["Getting absorbed in a story is the best. What do you like about it?",
                  "Commutes are great for reading. Do you prefer paper or e-books?"],
    },
    {
        "kind": "race",
        "ask_lex": ['What was my marathon time?', 'How fast did I finish the marathon?'],
        "who": [("", "")],
        "val": ["3 hours 52 minutes", "1 hour 48 minutes", "49 minutes", "4 hours 10 minutes",
                "2 hours 5 minutes"],
        "say": ["Finished my first marathon on Sunday in {val}, legs are destroyed.",
                "Crossed the finish line of the city marathon at {val}!"],
        "ask": ["How long did it take me to complete the long-distance running event?",
                "What was my finishing time in the 42 km race?"],
        "other": ["The bus took {val} to get across town because of roadworks.",
                  "The meeting dragged on for {val}, I nearly fell asleep."],
        "reply": ["Congratulations! Make sure you rest and stretch this week.",
                  "That's a huge achievement. Are you planning another one?"],
    },
    {
        "kind": "diet",
        "ask_lex": ['Since when have I been vegetarian?', 'When did I stop eating meat?'],
        "who": [("", "")],
        "val": ["January", "my birthday", "last summer", "the new year", "October"],
        "say": ["I've been vegetarian since {val} and honestly feel great.",
                "No meat for me since {val}, it's been easier than expected."],
        "ask": ["Since when have I stopped eating animal products like beef and chicken?",
                "When did I change my eating habits to plant-based?"],
        "other": ["The cafe has had the same specials since {val}.",
                  "My sister has been doing yoga since {val}."],
        "reply": ["That's a great change. Are you getting enough protein?",
                  "Lots of people find it easier than they expected. Any favourite recipes?"],
    },
    {
        "kind": "paint",
        "ask_lex": ["What colour did we paint the living room?",
                    "What colour are the living room walls?"],
        "who": [("", "")],
        "val": ["sage green", "navy blue", "terracotta", "mustard yellow", "dusty pink"],
        "say": ["We repainted the living room {val} over the weekend.",
                "The living room walls are {val} now, took three coats."],
        "ask": ["What colour is our lounge?", "Which shade did we choose for the sitting room?"],
        "other": ["My friend bought a {val} sofa that clashes with everything.",
                  "The new cafe downtown has {val} chairs."],
        "reply": ["Painting is so satisfying. Did you do it yourselves?",
                  "A fresh coat changes a space completely. Are you happy with how it looks?"],
    },
    {
        "kind": "drink",
        "ask_lex": ["What did I switch to instead of coffee?",
                    "What do I have in the mornings instead of coffee?"],
        "who": [("", "")],
        "val": ["matcha", "rooibos", "chai", "oolong", "yerba mate"],
        "say": ["I quit coffee and switched to {val} in the mornings.",
                "These days it's {val} for breakfast, no more espresso."],
        "ask": ["What hot beverage do I have when I wake up?",
                "What do I drink at the start of the day now?"],
        "other": ["The shop around the corner sells {val} in huge bags.",
                  "My aunt swears {val} cures everything."],
        "reply": ["Cutting caffeine can cause headaches for a week or so. How are you holding up?",
                  "Morning routines matter a lot. Do you feel more awake?"],
    },
    {
        "kind": "school",
        "ask_lex": ["Which kindergarten did my {who} start at?",
                    "Where did I drop my {who} off on the first day?"],
        "who": [("son", "boy"), ("daughter", "girl")],
        "val": ["Maple Grove Elementary", "Riverside Primary", "Oakwood Academy",
                "Hillcrest School", "Lakeside Montessori"],
        "say": ["My {who} started kindergarten at {val} this week.",
                "Dropped my {who} off at {val}, first day went fine."],
        "ask": ["Where does my {who2} go to class?",
                "Which school did my kid enrol in?"],
        "other": ["{val} is holding a bake sale on Saturday.",
                  "Traffic near {val} is terrible in the mornings."],
        "reply": ["First days are big milestones. How did they feel about it?",
                  "Kindergarten is such a fun age. Are they making friends?"],
    },
    {
        "kind": "language",
        "ask_lex": ["Which language am I practising on the app?",
                    "What language does my tutor teach me?"],
        "who": [("", "")],
        "val": ["Japanese", "Portuguese", "Korean", "Italian", "Turkish", "Swahili"],
        "say": ["I've been practising {val} on an app every day for two months.",
                "My {val} tutor says my pronunciation is improving."],
        "ask": ["Which foreign tongue am I studying?",
                "What language am I trying to learn?"],
        "other": ["The new restaurant has a menu only in {val}.",
                  "My coworker speaks fluent {val}, impressive."],
        "reply": ["Daily practice is the key. Do you have someone to speak with?",
                  "Apps are a good start. Have you tried watching shows with subtitles?"],
    },
    {
        "kind": "team",
        "ask_lex": ['Which team am I a fan of?', 'Which team did I watch lose last night?'],
        "who": [("", "")],
        "val": ["Arsenal", "the Celtics", "the Packers", "Boca Juniors", "the Yankees"],
        "say": ["I've been a {val} fan since I was a kid.",
                "Watched {val} lose again last night, I'm heartbroken."],
        "ask": ["Which club do I root for?", "What sports side do I support?"],
        "other": ["The bar was full of {val} supporters last night.",
                  "My landlord has a {val} flag in his window."],
        "reply": ["Being a fan is a rollercoaster. Do you go to games?",
                  "Tough loss. There's always next season!"],
    },
    {
        "kind": "gym",
        "ask_lex": ["Which class did I join at the community centre?",
                    "What class do I go to on Thursdays?"],
        "who": [("", "")],
        "val": ["pilates", "kickboxing", "spin", "aqua aerobics", "bouldering"],
        "say": ["I joined a {val} class at the community centre, Thursdays at 7.",
                "Second week of {val} and every muscle hurts."],
        "ask": ["What kind of exercise course did I sign up for?",
                "Which workout do I do on Thursday nights?"],
        "other": ["The {val} studio downtown closed last month.",
                  "My roommate tried {val} once and quit."],
        "reply": ["Group classes are great for motivation. How's the instructor?",
                  "Soreness fades after a few weeks. Remember to hydrate!"],
    },
    {
        "kind": "partner_job",
        "ask_lex": ['What does my {who} work as?', 'What did my {who} qualify as?'],
        "who": [("wife", "spouse"), ("husband", "spouse"), ("girlfriend", "partner"),
                ("boyfriend", "partner")],
        "val": ["a paramedic", "an architect", "a pastry chef", "a patent lawyer",
                "a veterinarian", "a pilot"],
        "say": ["My {who} works as {val} and does crazy shifts.",
                "My {who} just qualified as {val} after years of training."],
        "ask": ["What does my {who2} do for a living?",
                "What is my {who2}'s profession?"],
        "other": ["Met {val} at the party who told the funniest stories.",
                  "My cousin wants to become {val} someday."],
        "reply": ["That sounds demanding. How do you two make time for each other?",
                  "That's impressive dedication. You must be proud."],
    },
    {
        "kind": "garden",
        "ask_lex": ['What did I plant in the backyard?', 'What is sprouting in our raised beds?'],
        "who": [("", "")],
        "val": ["tomatoes", "zucchini", "lavender", "blueberries", "sunflowers", "chillies"],
        "say": ["Planted {val} in the backyard beds this spring.",
                "The {val} in our raised beds are finally sprouting."],
        "ask": ["What am I growing outside at home?",
                "What did I put in the garden this year?"],
        "other": ["The farmers market had {val} on sale.",
                  "My grandmother always grew {val} by the fence."],
        "reply": ["Gardening is so rewarding. Are you using any fertiliser?",
                  "Spring planting is exciting. Watch out for slugs!"],
    },
]

NAMES = ["Waffles", "Biscuit", "Pepper", "Mochi", "Ziggy", "Bruno", "Olive", "Noodle",
         "Pickles", "Luna", "Rocket", "Tofu"]

# Ordinary chat: user and assistant turns that share many words with the questions
# (city, school, food, room, colour, language, drink, book...) without being evidence.
FILLER_USER = [
    "The weather in the city has been grey all week.",
    "Work was hectic today, three meetings back to back.",
    "I made a big pot of lentil soup for dinner.",
    "Can you help me write an email to my landlord about the heating?",
    "What's a good recipe for banana bread?",
    "I can't decide which movie to watch tonight.",
    "My back hurts from sitting at the desk all day.",
    "Do you know any tips for sleeping better?",
    "The train was late again this morning.",
    "I need to plan a birthday present for a friend who likes hiking.",
    "Any ideas for a quick lunch I can take to the office?",
    "I spent the afternoon cleaning the garage.",
    "What's the difference between baking soda and baking powder?",
    "Remind me what the capital of Australia is.",
    "How do I get a red wine stain out of a carpet?",
    "I'm thinking about learning to cook Thai food.",
    "The kids next door were playing music until midnight.",
    "I forgot my umbrella and got soaked.",
    "Which streaming service has the best documentaries?",
    "I want to read more this year, any suggestions?",
    "We had friends over for a board game night.",
    "My phone battery dies so quickly lately.",
    "I'm trying to drink more water during the day.",
    "How many calories does a long run burn?",
    "The school down the road is building a new gym.",
    "I bought a new plant for the kitchen window.",
    "Which language is easiest for English speakers to learn?",
    "What colour goes well with grey furniture?",
    "Our car needs a service soon.",
    "I might switch teams at work next quarter.",
    "Is it worth buying an electric bike for commuting?",
    "I had a weird dream about being late for an exam.",
    "We're hosting my in-laws for dinner on Saturday.",
    "I keep forgetting to call the dentist.",
    "How do people stay motivated to exercise in winter?",
    "The new coffee place on the corner is always packed.",
    "I watched a documentary about deep sea animals.",
    "Should I get a standing desk?",
    "What do you think about audiobooks versus reading?",
    "Our holiday photos finally got printed.",
]
OPENERS = ["", "", "Hey, ", "Quick one: ", "So, ", "Honestly, ", "Anyway, ", "Also, ",
           "Okay. ", "Random thought: ", "By the way, ", "Hmm. "]
FILLER_ASSISTANT = [
    "Sure, happy to help with that.",
    "That sounds like a long day. Take some time to rest this evening.",
    "Here's a simple approach you could try.",
    "Good question. The short answer is that it depends on what you prefer.",
    "I'd suggest starting small and building a routine.",
    "That can be frustrating. Maybe try a different time of day.",
    "Many people find that a short walk helps.",
    "You could write a list and tackle one thing at a time.",
    "It might be worth asking a local expert about that.",
    "That sounds fun! Tell me how it goes.",
    "A lot of people in the city feel the same way.",
    "Learning a new skill takes time, so be patient with yourself.",
    "Food allergies and diets vary a lot, so check with a professional.",
    "Travel plans are easier with a checklist.",
    "Sports can be a great way to meet people.",
]


@dataclass
class Entry:
    id: int
    conv: int
    session: int
    turn: int
    role: str
    content: str


@dataclass
class Question:
    id: int
    conv: int
    kind: str
    text: str
    style: str = "ask"  # "ask": paraphrased; "ask_lex": shares words with the evidence
    evidence: list[int] = field(default_factory=list)


@dataclass
class EvalSet:
    entries: list[Entry]
    questions: list[Question]


def _fmt(template: str, **slots: str) -> str:
    out = template.format(**slots)
    return re.sub(r"\s+", " ", out).replace("my  ", "my ").strip()


def build(seed: int = SEED, convs: int = 10, sessions: int = 12,
          turns_per_session: int = 30, facts_per_conv: int = 16,
          paraphrased: float = PARAPHRASED) -> EvalSet:
    """Build the set deterministically from ``seed``."""
    rng = random.Random(seed)
    entries: list[Entry] = []
    questions: list[Question] = []
    for conv in range(convs):
        kinds = rng.sample(FACTS, facts_per_conv)
        # Plan what goes in each session: the fact statements (and updates), the
        # distractor statements about other people; filler tops the sessions up.
        plan: list[list[tuple[str, int, str]]] = [[] for _ in range(sessions)]
        for fi, fact in enumerate(kinds):
            who, who2 = rng.choice(fact["who"])  # type: ignore[arg-type]
            vals = rng.sample(fact["val"], 2)  # type: ignore[call-overload]
            name = rng.choice(NAMES)
            say = _fmt(rng.choice(fact["say"]), who=who, val=vals[0], name=name)  # type: ignore[arg-type]
            s_at = rng.randrange(sessions - 2)
            plan[s_at].append(("fact", fi, say))
            if "update" in fact and rng.random() < 0.5:
                upd = _fmt(str(fact["update"]), who=who, alt=vals[1])
                plan[rng.randrange(s_at + 1, sessions)].append(("update", fi, upd))
            # Half the questions are paraphrases that avoid the statement's content
            # words; half share one or two of them, as real users' questions often do.
            style = "ask" if rng.random() < paraphrased else "ask_lex"
            ask = _fmt(rng.choice(fact[style]), who=who, who2=who2)  # type: ignore[arg-type]
            questions.append(Question(len(questions), conv, str(fact["kind"]), ask, style))
            # Two or three distractors of the same kind, with other values.
            for _ in range(rng.randint(2, 3)):
                dval = rng.choice([v for v in fact["val"] if v not in vals])  # type: ignore[attr-defined]
                other = _fmt(rng.choice(fact["other"]), val=dval,  # type: ignore[arg-type]
                             name=rng.choice(NAMES))
                plan[rng.randrange(sessions)].append(("other", fi, other))
        qbase = len(questions) - facts_per_conv
        for s in range(sessions):
            items = plan[s]
            rng.shuffle(items)
            turn = 0
            # Interleave the planned user turns with filler so a session has
            # about turns_per_session turns, alternating user and assistant.
            n_filler = max(0, turns_per_session // 2 - len(items))
            slots: list[tuple[str, int, str] | None] = [*items, *([None] * n_filler)]
            rng.shuffle(slots)
            for item in slots:
                if item is None:
                    # Opener x sentence, so that chat rarely repeats a turn exactly.
                    user = f"{rng.choice(OPENERS)}{rng.choice(FILLER_USER)}"
                    reply = f"{rng.choice(OPENERS)}{rng.choice(FILLER_ASSISTANT)}"
                else:
                    tag, fi, user = item
                    fact = kinds[fi]
                    reply = (rng.choice(fact["reply"]) if tag != "other"  # type: ignore[arg-type]
                             else rng.choice(FILLER_ASSISTANT))
                eid = len(entries)
                entries.append(Entry(eid, conv, s, turn, "user", user))
                entries.append(Entry(eid + 1, conv, s, turn + 1, "assistant", reply))
                turn += 2
                if item is not None and item[0] in ("fact", "update"):
                    questions[qbase + item[1]].evidence.append(eid)
    return EvalSet(entries, questions)


def entry_text(e: Entry) -> str:
    """What is stored: the turn verbatim, with its speaker (as a memory entry would be)."""
    return f"{e.role}: {e.content}"


# --- ranking -------------------------------------------------------------------------

Ranker = Callable[[Question, int], list[int]]  # -> entry ids, best first


class FTS5BM25:
    """BM25 through SQLite FTS5, as the product will run it (stdlib sqlite3)."""

    def __init__(self, es: EvalSet, tokenize: str = "porter unicode61") -> None:
        self.db = sqlite3.connect(":memory:")
        self.db.execute(
            f"CREATE VIRTUAL TABLE m USING fts5(content, conv UNINDEXED, tokenize='{tokenize}')"
        )
        self.db.executemany(
            "INSERT INTO m(rowid, content, conv) VALUES (?, ?, ?)",
            [(e.id, entry_text(e), e.conv) for e in es.entries],
        )

    @staticmethod
    def match_expr(text: str) -> str:
        # Every word an OR'd quoted term: the question is free text, not FTS5 syntax.
        words = re.findall(r"\w+", text.lower())
        return " OR ".join(f'"{w}"' for w in dict.fromkeys(words)) or '""'

    def rank(self, q: Question, n: int) -> list[int]:
        rows = self.db.execute(
            "SELECT rowid FROM m WHERE m MATCH ? AND conv = ? ORDER BY bm25(m) LIMIT ?",
            (self.match_expr(q.text), q.conv, n),
        ).fetchall()
        return [r[0] for r in rows]


def _hash_features(text: str) -> Counter[int]:
    """Word unigrams and character 4-grams, hashed into 2^20 buckets."""
    feats: Counter[int] = Counter()
    for w in re.findall(r"\w+", text.lower()):
        feats[_h("w" + w)] += 1
        padded = f" {w} "
        for i in range(len(padded) - 3):
            feats[_h("c" + padded[i:i + 4])] += 1
    return feats


def _h(s: str) -> int:
    return int.from_bytes(hashlib.blake2b(s.encode(), digest_size=4).digest(), "little") & (
        (1 << 20) - 1
    )


class HashingTfidf:
    """A weightless vector baseline: hashed TF-IDF (log tf, smooth idf), cosine."""

    def __init__(self, es: EvalSet) -> None:
        docs = [_hash_features(entry_text(e)) for e in es.entries]
        df: Counter[int] = Counter()
        for d in docs:
            df.update(d.keys())
        n = len(docs)
        self.idf = {f: math.log((1 + n) / (1 + c)) + 1 for f, c in df.items()}
        self.vecs = [self._weigh(d) for d in docs]
        self.by_conv: dict[int, list[int]] = {}
        for e in es.entries:
            self.by_conv.setdefault(e.conv, []).append(e.id)

    def _weigh(self, feats: Counter[int]) -> dict[int, float]:
        v = {f: (1 + math.log(c)) * self.idf.get(f, 1.0) for f, c in feats.items()}
        norm = math.sqrt(sum(x * x for x in v.values())) or 1.0
        return {f: x / norm for f, x in v.items()}

    def rank(self, q: Question, n: int) -> list[int]:
        qv = self._weigh(_hash_features(q.text))
        scored = []
        for eid in self.by_conv[q.conv]:
            dv = self.vecs[eid]
            scored.append((sum(w * dv.get(f, 0.0) for f, w in qv.items()), eid))
        scored.sort(key=lambda t: (-t[0], t[1]))
        return [eid for _, eid in scored[:n]]


def rrf(rankings: Sequence[Sequence[int]], k: int = 60) -> list[int]:
    """Reciprocal rank fusion: sum of 1 / (k + rank) over the lists (rank from 1)."""
    score: dict[int, float] = {}
    for ranking in rankings:
        for r, eid in enumerate(ranking, 1):
            score[eid] = score.get(eid, 0.0) + 1.0 / (k + r)
    return sorted(score, key=lambda e: (-score[e], e))


def weighted(lexical: Sequence[int], vector: Sequence[int], alpha: float) -> list[int]:
    """Weighted fusion of rank-normalised scores: alpha * vector + (1 - alpha) * lexical.

    Each list's score is 1 - rank / len (the best 1, the last about 0; absent 0), which
    needs no calibration between BM25 and cosine scales.
    """
    score: dict[int, float] = {}
    for ranking, w in ((lexical, 1 - alpha), (vector, alpha)):
        n = len(ranking)
        for r, eid in enumerate(ranking):
            score[eid] = score.get(eid, 0.0) + w * (1 - r / n)
    return sorted(score, key=lambda e: (-score[e], e))


def recall_at(ranked: Sequence[int], evidence: Sequence[int], k: int = K) -> float:
    top = set(ranked[:k])
    return sum(1 for e in evidence if e in top) / len(evidence)


def mean_recall(es: EvalSet, ranked: Callable[[Question], list[int]], k: int = K) -> float:
    return sum(recall_at(ranked(q), q.evidence, k) for q in es.questions) / len(es.questions)


def evaluate(es: EvalSet, lexical: Ranker, vector: Ranker | None, depth: int = 100,
             alphas: Sequence[float] = (0.3, 0.5, 0.7, 0.8, 0.9)) -> dict[str, float]:
    """recall@10 for lexical only, vector only, RRF (k=60) and weighted fusion."""
    lex = {q.id: lexical(q, depth) for q in es.questions}
    out = {"bm25": mean_recall(es, lambda q: lex[q.id])}
    # The same figure on the paraphrased half alone: where an embedder has to help.
    para = EvalSet(es.entries, [q for q in es.questions if q.style == "ask"])
    out["bm25_paraphrased"] = mean_recall(para, lambda q: lex[q.id])
    if vector is None:
        return {k: round(v, 4) for k, v in out.items()}
    vec = {q.id: vector(q, depth) for q in es.questions}
    out["vector"] = mean_recall(es, lambda q: vec[q.id])
    out["vector_paraphrased"] = mean_recall(para, lambda q: vec[q.id])
    out["rrf60"] = mean_recall(es, lambda q: rrf([lex[q.id], vec[q.id]]))
    out["rrf60_paraphrased"] = mean_recall(para, lambda q: rrf([lex[q.id], vec[q.id]]))
    # RRF with the vector list counted twice (weight 2), for a weak lexical ranker.
    out["rrf60_vec2"] = mean_recall(es, lambda q: rrf([lex[q.id], vec[q.id], vec[q.id]]))
    for a in alphas:
        out[f"weighted_{a}"] = mean_recall(es, lambda q, a=a: weighted(lex[q.id], vec[q.id], a))
    return {k: round(v, 4) for k, v in out.items()}


def stats(es: EvalSet) -> dict[str, object]:
    convs = Counter(e.conv for e in es.entries)
    return {
        "entries": len(es.entries),
        "questions": len(es.questions),
        "conversations": len(convs),
        "entries_per_conversation": sorted(set(convs.values())),
        "paraphrased_questions": sum(1 for q in es.questions if q.style == "ask"),
        "distinct_entries": len({e.content for e in es.entries}),
        "questions_with_2_evidence": sum(1 for q in es.questions if len(q.evidence) > 1),
        "mean_chars": round(sum(len(entry_text(e)) for e in es.entries) / len(es.entries), 1),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=SEED)
    ap.add_argument("--dump", help="write the set as JSONL to this file")
    ap.add_argument("--stats", action="store_true")
    ap.add_argument("--paraphrased", type=float, default=PARAPHRASED,
                    help="share of paraphrased questions (default %(default)s)")
    args = ap.parse_args(argv)
    es = build(args.seed, paraphrased=args.paraphrased)
    if args.dump:
        with open(args.dump, "w") as f:
            for e in es.entries:
                f.write(json.dumps({"entry": e.__dict__, "text": entry_text(e)}) + "\n")
            for q in es.questions:
                f.write(json.dumps({"question": q.__dict__}) + "\n")
    if args.stats:
        print(json.dumps(stats(es)))
        return 0
    for name, tok in (("bm25_porter", "porter unicode61"), ("bm25_plain", "unicode61")):
        t0 = time.perf_counter()
        bm = FTS5BM25(es, tok)
        print(json.dumps({"candidate": name, **evaluate(es, bm.rank, None),
                          "seconds": round(time.perf_counter() - t0, 2)}))
    t0 = time.perf_counter()
    bm, hv = FTS5BM25(es), HashingTfidf(es)
    print(json.dumps({"candidate": "hashing_tfidf", **evaluate(es, bm.rank, hv.rank),
                      "seconds": round(time.perf_counter() - t0, 2)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

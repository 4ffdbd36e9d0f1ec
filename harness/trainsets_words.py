"""Word lists and scene templates for the procedural OCR training prompts (``harness.trainsets``).

Everything here is data written for this project. A quoted text comes from a *text kind*: one of its patterns
with each ``{slot}`` filled from ``WORDS[slot]``. A prompt comes from a *scene*: what carries the text (its
subject phrases), how the text is introduced, where the scene is, and a closing detail, dropped into one of the
sentence ``FRAMES`` together with a photographic ``STYLE``, a ``LIGHT`` and a ``FONT``. Nothing here may contain a
double quote: the quoted text must be the prompt's only double-quoted span.
"""

from __future__ import annotations

from typing import NamedTuple

# ------------------------------------------------------------------------------------------------ words

# fmt: off
WORDS: dict[str, tuple[str, ...]] = {
    "name": tuple(
        "Mia Leo Ava Noah Zoe Omar Ines Hugo Lena Theo Ruby Milo Nora Ezra Iris Felix Maya Jonah Cleo "
        "Arlo Hazel Rafael Greta Tobias Priya Mateo Elsa Kofi Amara Silas Juno Dev Lucia Otto Freya "
        "Ravi Nadia Bruno Wren Yusuf Stella Emil Ada Kenji Talia Marco Esme Idris Vera Caleb Ruth "
        "Dario Selma Jasper Tess Anton Layla Quinn Rosa Benny Oona Malik Dora Finn Imani Pablo Sage".split()
    ),
    "surname": tuple(
        "Abbott Barnes Castillo Dunmore Ellery Fairweather Gallo Holloway Ivers Jansen Kowalski "
        "Lindqvist Moreau Nakamura Okafor Pennington Quill Rasmussen Sorensen Thackeray Underwood "
        "Vasquez Whitlock Yardley Zimmer Baptiste Carrow Delacroix Fenwick Grimaldi Hartley Kincaid "
        "Lockwood Mbeki Novak Ortega Petrakis Reyes Sterling Tanaka".split()
    ),
    "place": (
        "Willow Creek", "Maple Ridge", "Harbor Point", "Cedar Falls", "Pine Hollow", "Fox Valley",
        "Silver Lake", "Copper Canyon", "Elm Crossing", "Stony Brook", "Bramble Bay", "Oak Harbor",
        "Juniper Flats", "Red Rock", "Misty Glen", "Birch Haven", "Saltmarsh", "Kettle Cove",
        "Amber Hills", "Blue Mesa", "Thornbury", "Lark Meadow", "Gull Island", "Rookwood",
        "Falcon Heights", "Sunset Bluff", "Windmere", "Highgate", "Lowell Park", "Brightwater",
        "Eastbrook", "Northfield", "Greystone", "Coral Springs", "Ironwood", "Clearwater",
        "Ashford", "Pebble Beach", "Dunmore Bay", "Larkspur", "Sparrow Hill", "Mossbank",
        "Wolf Pass", "Heron Lake", "Tamarack", "Quarry Hill", "Bellhaven", "Driftwood",
        "Marigold", "Frost Valley", "Glimmer Cove", "Lantern Bay", "Orchard Hill", "Riverbend",
        "Starling", "Tidewater", "Vale End", "Westmoor", "Yarrow", "Zephyr Point",
    ),
    "shop": (
        "Bakery", "Books", "Diner", "Garage", "Florist", "Barber Shop", "Coffee House", "Hardware",
        "Pizzeria", "Tailors", "Laundromat", "Bike Repair", "Records", "Tea Room", "Deli",
        "Noodle Bar", "Creamery", "Pet Supplies", "Pharmacy", "Antiques", "Surf Shop", "Ceramics",
        "Taqueria", "Print Shop", "Music Store", "Candle Co", "Bait And Tackle", "Toy Workshop",
        "Gelato", "Fish Market", "Butcher", "Cheese Shop", "Vintage Clothing", "Plant Nursery",
        "Bike Shop", "Smokehouse", "Dumpling House", "Juice Bar", "Bagels", "Pottery Studio",
    ),
    "adj": tuple(
        "Golden Silver Quiet Lucky Hidden Wild Little Grand Rusty Velvet Crimson Midnight Sunny Brave "
        "Gentle Electric Cosmic Humble Happy Sleepy Hungry Curious Bright Frozen Crooked Lazy Merry "
        "Noble Tiny Giant Ancient Modern Secret Lonely Dizzy Fuzzy Salty Sweet Spicy Smoky Misty Stormy "
        "Dusty Shiny Rustic Royal Wandering Dancing Flying Howling Sparkling Blazing Silent Restless "
        "Honest Clever Jolly Mellow Breezy Cozy Crispy Hollow Painted Striped Rolling Roaring Drifting "
        "Laughing Singing Sunken Twisted Wooden Paper Iron Copper Emerald Amber Indigo Scarlet Ivory "
        "Coral Jade Azure Lavender Maroon Olive".split()
    ),
    "noun": tuple(
        "Harbor Lantern Meadow Comet Ember Orchard Compass Anchor Feather Thunder River Canyon Garden "
        "Island Mountain Forest Ocean Desert Valley Castle Bridge Tower Lighthouse Voyage Journey "
        "Promise Secret Whisper Shadow Echo Mirror Window Door Key Clock Crown Ring Star Moon Sun Cloud "
        "Rain Storm Wind Fire Stone Glass Silk Honey Salt Pepper Sugar Thistle Fern Willow Acorn "
        "Pinecone Pebble Wave Tide Reef Shell Kite Balloon Rocket Engine Wheel Bicycle Train Ship "
        "Sail Map Letter Diary Atlas Melody Rhythm Chorus Carnival Circus Parade Harvest Winter Summer "
        "Autumn Spring Morning Twilight Midnight Dawn Horizon Galaxy Planet Nebula Orbit Signal Beacon "
        "Ladder Garden Teacup Kettle Quilt Blanket Candle Mailbox Postcard Suitcase Umbrella Violin "
        "Piano Trumpet Drum Banjo Lagoon Glacier Volcano Prairie Tundra Marsh".split()
    ),
    "animal": tuple(
        "Fox Owl Bear Wolf Otter Badger Raven Heron Moose Llama Panda Tiger Lion Falcon Turtle Whale "
        "Dolphin Penguin Goat Rabbit Hedgehog Squirrel Beaver Bison Crane Sparrow Koala Lemur Gecko "
        "Octopus Walrus Yak Zebra Camel Pelican Flamingo Salmon Trout Beetle Firefly Duck Goose Pig "
        "Cow Horse Donkey Cat Dog Hamster Parrot".split()
    ),
    "food": (
        "Pancakes", "Waffles", "Tacos", "Burritos", "Dumplings", "Ramen", "Pho", "Pizza", "Bagels",
        "Croissants", "Donuts", "Cupcakes", "Brownies", "Cookies", "Pretzels", "Nachos", "Burgers",
        "Hot Dogs", "Fries", "Onion Rings", "Fish Tacos", "Crab Cakes", "Oysters", "Lobster Rolls",
        "Clam Chowder", "Chili", "Gumbo", "Curry", "Falafel", "Hummus", "Kebabs", "Sushi",
        "Tempura", "Noodles", "Fried Rice", "Spring Rolls", "Empanadas", "Pierogi", "Gnocchi",
        "Lasagna", "Meatballs", "Mac And Cheese", "Grilled Cheese", "Pot Pie", "Apple Pie",
        "Cherry Pie", "Cheesecake", "Gelato", "Sorbet", "Milkshakes", "Smoothies", "Lemonade",
        "Iced Tea", "Hot Cocoa", "Cold Brew", "Espresso", "Chai", "Cider", "Scones", "Muffins",
        "Cinnamon Rolls", "Churros", "Fudge", "Toffee", "Peaches", "Strawberries", "Blueberries",
        "Pumpkins", "Sweet Corn", "Tomatoes", "Mushrooms", "Honeycrisp Apples", "Pears", "Figs",
    ),
    "product": (
        "Jam", "Granola", "Crackers", "Soap", "Candles", "Tea", "Coffee Beans", "Hot Sauce",
        "Honey", "Chips", "Cookies", "Cereal", "Soda", "Shampoo", "Sunscreen", "Pasta", "Popcorn",
        "Pickles", "Salsa", "Syrup", "Trail Mix", "Ice Cream", "Yogurt", "Toothpaste",
        "Dog Treats", "Bath Salts", "Noodles", "Mustard", "Kombucha", "Oatmeal", "Chocolate Bar",
        "Sparkling Water", "Lip Balm", "Hand Cream", "Peanut Butter", "Olive Oil", "Gummy Bears",
    ),
    "flavor": (
        "Wild Berry", "Smoked Maple", "Spicy Mango", "Lemon Ginger", "Sea Salt", "Honey Lavender",
        "Dark Cherry", "Toasted Coconut", "Salted Caramel", "Blood Orange", "Mint Chip", "Vanilla Bean",
        "Cinnamon Apple", "Black Pepper", "Roasted Garlic", "Ghost Pepper", "Pink Grapefruit",
        "Double Chocolate", "Peach Basil", "Key Lime", "Cucumber Mint", "Espresso Bean", "Maple Pecan",
        "Rosemary", "Pumpkin Spice", "Wild Blueberry", "Hazelnut", "Passion Fruit", "Elderflower",
        "Sour Apple", "Sweet Potato", "Chili Lime", "Cookie Dough", "Banana Bread", "Green Tea",
    ),
    "item": (
        "Keys", "Umbrella", "Socks", "Batteries", "Spices", "Buttons", "Yarn", "Light Bulbs",
        "Tools", "Seeds", "Paintbrushes", "Screws", "Ribbons", "Stamps", "Receipts", "Photos",
        "Letters", "Cables", "Chargers", "Fuses", "Candles", "Matches", "Marbles", "Crayons",
        "Puzzle Pieces", "Sheet Music", "Recipes", "Seashells", "Gloves", "Scarves", "Mittens",
        "Toys", "Comics", "Records", "Tapes", "Maps", "Dice", "Chalk", "Pencils", "Tea Bags",
        "Flour", "Sugar", "Rice", "Lentils", "Oats", "Coffee", "Cocoa", "Pasta", "Dog Food",
        "Birdseed", "Glitter", "Stickers", "Postcards", "Coins", "Snacks", "Napkins", "Bandages",
    ),
    "activity": (
        "Swimming", "Fishing", "Skateboarding", "Camping", "Diving", "Littering", "Feeding Ducks",
        "Parking", "Smoking", "Climbing", "Running", "Cycling", "Loitering", "Photography",
        "Campfires", "Drones", "Jet Skis", "Horseback Riding", "Sledding", "Ball Games", "Picnics",
        "Kite Flying", "Metal Detecting", "Rollerblading", "Surfing", "Kayaking", "Hunting",
        "Trespassing", "Honking", "Whistling", "Dancing", "Singing", "Snacking", "Napping",
    ),
    "hazard": (
        "Wet Floor", "Falling Rocks", "Low Ceiling", "Thin Ice", "Hot Surface", "Slippery Path",
        "Loose Gravel", "Deep Water", "Strong Currents", "Steep Drop", "Sharp Edges", "Live Wires",
        "Moving Parts", "Flying Golf Balls", "Falling Coconuts", "Soft Shoulder", "Rising Tide",
        "Sudden Gusts", "Narrow Bridge", "Low Clearance", "Uneven Steps", "Fresh Paint",
        "Angry Geese", "Falling Icicles", "Quicksand", "High Winds", "Rockslide Area",
        "Slow Turtles", "Curious Goats", "Hidden Roots", "Hungry Seagulls", "Muddy Trail",
    ),
    "event": (
        "Jazz Night", "Book Fair", "Science Fair", "Film Festival", "Chili Cookoff", "Open Mic",
        "Bake Sale", "Pottery Class", "Yoga Retreat", "Harvest Fair", "Lantern Festival",
        "Kite Festival", "Pie Contest", "Talent Show", "Spelling Bee", "Car Wash", "Dance Marathon",
        "Trivia Night", "Art Walk", "Flea Market", "Boat Parade", "Star Party", "Ice Carving",
        "Sandcastle Contest", "Poetry Slam", "Robot Battle", "Chess Tournament", "Fun Run",
        "Garden Tour", "Cheese Fest", "Salsa Night", "Karaoke Night", "Movie Night",
        "Puppet Show", "Craft Fair", "Food Truck Rally", "Rodeo", "Regatta", "Block Party",
    ),
    "verb": tuple(
        "Dream Explore Dance Paddle Bake Wander Climb Create Breathe Read Sing Run Travel Laugh Grow "
        "Build Draw Surf Skate Garden Hike Camp Swim Ride Code Paint Write Cook Knit Fly Sail Shine Rest "
        "Listen Play Smile Jump Roam Rise Bloom Glow Believe Hustle Imagine Chill".split()
    ),
    "quality": tuple(
        "Wild Curious Humble Weird Kind Golden Salty Cozy Brave Hungry Sunny Strong Calm Bold Gentle "
        "Sharp Loud Free Fierce Patient Grateful Sparkly Groovy Fearless Mellow".split()
    ),
    "task": (
        "Upload", "Download", "Backup", "Sync", "Scan", "Update", "Install", "Payment", "Order",
        "Delivery", "Transfer", "Export", "Render", "Print Job", "Checkout", "Login", "Booking",
        "Recording", "Calibration", "Reboot",
    ),
    "state": (
        "Complete", "Failed", "Paused", "Pending", "Started", "Confirmed", "Cancelled", "Delayed",
        "Approved", "Denied", "Interrupted", "Successful", "In Progress", "Scheduled", "Saved",
    ),
    "system": (
        "Shields", "Engines", "Oxygen", "Gravity", "Navigation", "Life Support", "Thrusters",
        "Radar", "Sonar", "Autopilot", "Hyperdrive", "Comms", "Reactor", "Cloaking", "Tractor Beam",
    ),
    "mode": ("Online", "Offline", "Critical", "Restored", "Overheating", "Ready", "Locked", "Stable"),
    "subject": (
        "Math", "Science", "History", "Reading", "Chemistry", "Geography", "Music", "Art",
        "Physics", "Biology", "Poetry", "Coding", "Spelling", "Grammar", "Astronomy",
    ),
    "nature": (
        "Oceans", "Forests", "Rivers", "Bees", "Wetlands", "Coral Reefs", "Parks", "Glaciers",
        "Night Skies", "Meadows", "Mountains", "Libraries", "Trees", "Beaches",
    ),
    "day": ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"),
    "month": tuple("January February March April May June July August September October November December".split()),
    "season": ("Spring", "Summer", "Autumn", "Winter", "Fall"),
    "letter": tuple("ABCDEFGHJKLMNPRSTVWXZ"),
    "n": tuple(str(k) for k in range(2, 13)),
    "big": ("15", "20", "24", "30", "40", "42", "50", "64", "75", "99", "101", "120", "150", "250",
            "300", "404", "500", "777", "808", "1000", "2048", "9000"),
    "year": tuple(str(y) for y in (1887, 1908, 1925, 1954, 1962, 1971, 1983, 1989, 1996, 2001,
                                   2009, 2013, 2017, 2021, 2026, 2031, 2042, 2077, 2099)),
    "ordinal": ("1st", "2nd", "3rd", "5th", "10th", "12th", "20th", "25th", "30th", "40th", "50th"),
    "hobby": (
        "Surfing", "Coffee", "Knitting", "Pizza", "Gardening", "Baking", "Hiking", "Skating", "Fishing",
        "Jazz", "Chess", "Yoga", "Tacos", "Camping", "Running", "Reading", "Dancing", "Cycling",
        "Climbing", "Painting", "Pottery", "Karaoke", "Bowling", "Soccer", "Birding", "Sushi",
    ),
    "relative": ("Mom", "Dad", "Grandpa", "Grandma", "Aunt", "Uncle", "Sister", "Brother", "Teacher",
                 "Boss", "Neighbor", "Coach", "Nana", "Godmother"),
    "room": ("Room", "Suite", "Office", "Studio", "Lab", "Cabin", "Locker", "Ward"),
    "road": ("Street", "Road", "Lane", "Avenue", "Boulevard", "Way", "Drive", "Alley", "Trail"),
}
# fmt: on


def plural(word: str) -> str:
    """English plural of a capitalised noun from these lists (regular rules plus the few exceptions used)."""
    if word in _SAME_PLURAL:
        return word
    if word in _IRREGULAR:
        return _IRREGULAR[word]
    if word.endswith(("s", "x", "z", "ch", "sh")):
        return word + "es"
    if word.endswith("y") and word[-2] not in "aeiou":
        return word[:-1] + "ies"
    return word + "s"


_SAME_PLURAL = {"Moose", "Bison", "Salmon", "Trout", "Sheep", "Fish"}
_IRREGULAR = {"Echo": "Echoes", "Volcano": "Volcanoes", "Wolf": "Wolves", "Goose": "Geese"}
WORDS["animals"] = tuple(plural(w) for w in WORDS["animal"])
WORDS["nouns"] = tuple(plural(w) for w in WORDS["noun"])

# ------------------------------------------------------------------------------------------------ text kinds

# fmt: off
TEXT_KINDS: dict[str, tuple[str, ...]] = {
    "business": (
        "{name}'s {shop}", "{adj} {noun} {shop}", "The {adj} {noun}", "{place} {shop}",
        "{surname} And Sons", "{adj} {animal} {shop}", "The {noun} {shop}", "{surname} {shop}",
        "{name} And {name}", "{adj} {animal} Cafe", "{place} General Store", "Chez {name}",
    ),
    "neon": (
        "Open Late", "Open 24 Hours", "{food} All Night", "Live Music {day}", "{adj} Vibes",
        "Bar {name}", "{adj} {animal} Lounge", "Cocktails And {food}", "Always Open", "Come In",
        "{noun} Club", "Late Night {food}", "Hot {food}", "{adj} Hour", "Vacancy", "No Vacancy",
    ),
    "menu": (
        "{food} {n} Dollars", "Fresh {food} Today", "{food} Special", "Soup Of The Day",
        "Two {food} For {n}", "Try Our {flavor} {food}", "{day} {food} Night", "Homemade {food}",
        "{flavor} {product}", "Today Only {food}", "{season} Menu", "Free {food} Refills",
        "All You Can Eat {food}", "{food} Back In Stock",
    ),
    "greeting": (
        "Happy Birthday {name}", "Congrats {name}", "Welcome Home {name}", "Happy {ordinal} Anniversary",
        "Get Well Soon {name}", "Happy Retirement {name}", "Good Luck {name}", "Thank You {name}",
        "Bon Voyage {name}", "World's Best {relative}", "Happy {ordinal} Birthday", "Welcome Baby {name}",
        "Sweet {n}", "Class Of {year}", "We Miss You {name}", "Cheers To {n} Years",
    ),
    "slogan": (
        "Born To {verb}", "{verb} More Worry Less", "Powered By {food}", "{hobby} Is Life",
        "Keep Calm And {verb}", "I Love {place}", "{verb} Every Day", "Stay {quality}",
        "Team {animal}", "{verb} Like A {animal}", "Eat Sleep {verb} Repeat", "{quality} And {quality}",
        "Will {verb} For {food}", "{place} Athletic Club", "Just {verb} It Out", "{quality} Since {year}",
        "Good Vibes Only", "Less Talk More {verb}", "Professional {animal} Whisperer",
    ),
    "title": (
        "The {adj} {noun}", "{noun} Of The {noun}", "A {noun} In {place}", "{adj} {noun}",
        "Beyond The {noun}", "Songs For The {noun}", "The Last {noun}", "Return To {place}",
        "The {animal} And The {noun}", "{adj} {nouns}", "Tales From {place}", "The {noun} Keeper",
        "{name} And The {adj} {noun}", "Letters From {place}", "Under The {adj} {noun}",
    ),
    "warning": (
        "Caution {hazard}", "Warning {hazard}", "Danger {hazard}", "Beware Of {hazard}",
        "No {activity}", "No {activity} Allowed", "{animal} Crossing", "Authorized Staff Only",
        "Keep Gate Closed", "Watch For {hazard}", "{activity} Prohibited", "Beware Of The {animal}",
        "Slow Down {hazard}", "Do Not Feed The {animals}", "Area Closed For {activity}",
    ),
    "direction": (
        "{place} {n} Miles", "{place} Station", "Exit {big} {place}", "Welcome To {place}",
        "{place} Trailhead", "{noun} {road}", "{adj} Oak {road}", "Platform {n}",
        "{place} Next Right", "{place} Beach Access", "{noun} Lookout {big} Feet",
        "{place} City Limits", "Scenic View {n} Miles", "{place} Campground",
    ),
    "status": (
        "{task} {state}", "Low Battery", "{task} Successful", "Update Available", "Level {n} Unlocked",
        "Error {big}", "Loading {noun}", "Signal Lost", "Access Granted", "Access Denied",
        "{n} New Messages", "Battery {big} Percent", "No Internet Connection", "{task} At {big} Percent",
        "Do Not Disturb", "Meeting In {n} Minutes", "{task} Scheduled For {day}",
    ),
    "game": (
        "Game Over", "Level {n} Complete", "Player {n} Wins", "Insert Coin", "High Score {big}",
        "Press Start", "Boss Defeated", "Continue {n}", "You Win", "New Record {big}",
        "Round {n} Fight", "Extra Life", "{adj} {animal} Mode", "World {n} {noun}",
    ),
    "scifi": (
        "{system} {mode}", "Hull Breach Deck {n}", "Oxygen Low", "Course Set For {place}",
        "Docking Bay {n}", "Warp Ready", "Sector {letter}{n} Clear", "{system} At {big} Percent",
        "Gate {letter}{n} Sealed", "Welcome Aboard {name}", "Airlock {n} Open", "Landing On {noun} {n}",
    ),
    "product": (
        "{flavor} {product}", "{name}'s {product}", "{adj} {product}", "{flavor} {product} {n} Pack",
        "Organic {flavor} {product}", "Grandma {name}'s {product}", "{place} {product}",
        "{adj} {animal} {product}", "Extra {adj} {product}", "{flavor} Flavored {product}",
    ),
    "label": (
        "{item}", "Spare {item}", "Do Not Open", "Fragile", "Handle With Care", "{name}'s {item}",
        "Kitchen {item}", "Old {item}", "Lost And Found", "{item} And {item}", "Donations",
        "Extra {item}", "Misc {item}", "This Side Up", "Keep Dry", "{season} {item}",
    ),
    "note": (
        "Call {name} Back", "Buy More {item}", "Meet Me At {n}", "Back In {n} Minutes",
        "Don't Forget The {item}", "Miss You {name}", "See You Soon", "Water The {noun}",
        "Feed The {animal}", "Gone {activity}", "Dinner At {n}", "Pick Up {item}",
        "{name} Was Here", "Love You {name}", "Be Right Back", "Ask {name} About {item}",
    ),
    "event": (
        "{place} {event} {year}", "{adj} {event}", "{event} Tonight", "Annual {food} Festival",
        "{event} Sold Out", "{event} This {day}", "{place} {event}", "{season} {event}",
        "{event} {month} {n}", "Free {event}", "{name}'s {event}", "{event} Canceled",
    ),
    "home": (
        "Welcome To The {surname}s", "Wipe Your Paws", "Home Of {name}", "The {surname} Family",
        "{name}'s Room", "Beware Of {name}", "Home Sweet {noun}", "{surname} Cottage",
        "Please Remove Shoes", "{name} And {name} Est {year}", "The {adj} {noun} House",
    ),
    "badge": (
        "Hello I'm {name}", "{name} {surname}", "Staff {name}", "Visitor", "Head Chef {name}",
        "Coach {surname}", "Dr {surname}", "{name} Security", "Captain {surname}", "Volunteer {name}",
        "Guest Speaker {surname}", "Intern {name}", "{name} Tour Guide",
    ),
    "award": (
        "Best {food} {year}", "{place} Champions {year}", "First Place {event}",
        "In Memory Of {name} {surname}", "{ordinal} Place {event}", "Founded {year}", "Best In {place}", "Most {quality} {animal}",
        "Hall Of Fame {year}", "{surname} Cup {year}",
    ),
    "cause": (
        "Save The {animals}", "Protect Our {nature}", "More {nouns} Less {nouns}", "{nature} Matter",
        "{noun} For All", "Plant More {nouns}", "Vote {name}", "Free The {animals}",
        "Fund Our {nature}", "Hands Off Our {nature}", "{verb} Together",
    ),
    "boat": (
        "{adj} {noun}", "{name}'s {noun}", "Sea {noun}", "The {adj} {animal}", "{place} Queen",
        "Miss {name}", "{noun} Runner", "{adj} Lady", "Reel {noun}",
    ),
    "stamp": (
        "Urgent", "Air Mail", "Return To Sender", "Confidential", "Paid", "Approved", "Rejected",
        "Top Secret", "Priority", "Final Notice", "Received {month} {n}", "Case {big}",
        "Classified {letter}{n}", "Void", "Copy",
    ),
    "door": (
        "{name} {surname} Detective", "Private Office", "{room} {big}", "Manager", "Dr {surname}",
        "Staff Only", "Records {room}", "{surname} And {surname} Law", "Quiet Please",
        "Keep This Door Closed", "Archive {room} {letter}", "Employees Only",
    ),
    "headline": (
        "{animal} Elected Mayor", "{place} Wins Again", "Local {animal} Saves {name}",
        "{noun} Spotted Over {place}", "{food} Shortage Ends", "{place} Floods", "Record {season} Heat",
        "{adj} {noun} Returns", "{event} Breaks Record", "{animals} Take Over {place}",
    ),
    "fortune": (
        "Adventure Awaits", "Trust Your {noun}", "{verb} Boldly", "Good News Is Coming",
        "A {adj} {noun} Awaits", "Luck Is Near", "Follow The {noun}", "Say Yes To {noun}",
        "Your {noun} Will Shine", "Expect A {adj} Surprise",
    ),
    "lab": (
        "Sample {letter}{n}", "Do Not Drink", "Specimen {big}", "Compound {letter}{n}",
        "Batch {big}", "Test Tube {n}", "Culture {letter}", "Reagent {letter}{n}",
        "Project {noun}", "Experiment {big}", "Handle With Gloves",
    ),
    "wedding": (
        "{name} And {name}", "Just Married", "Happily Ever After", "Mr And Mrs {surname}",
        "{name} Loves {name}", "Save The Date", "Welcome To Our Wedding", "The {surname} Wedding",
        "Forever {name}", "Together Since {year}",
    ),
    "jersey": ("{surname} {n}", "{surname} {big}", "{place} {n}", "{name} {n}", "Captain {n}"),
    "quest": (
        "Here Be {animals}", "{noun} Island", "X Marks The {noun}", "Lost {noun} Of {place}",
        "Cave Of {nouns}", "{adj} {noun} Pass", "Beware The {adj} {animal}", "Dig Here",
        "Treasure Of {place}", "Temple Of The {animal}",
    ),
}

# ------------------------------------------------------------------------------------------------ scenes
# fmt: on


class Scene(NamedTuple):
    """One kind of object that carries text, and how to talk about it."""

    kind: str  # a TEXT_KINDS key
    subjects: tuple[str, ...]  # noun phrases with their article
    shows: tuple[str, ...]  # how the text is introduced, e.g. "that reads"
    settings: tuple[str, ...]  # where: a prepositional phrase
    details: tuple[str, ...]  # a closing detail: a participial or "with ..." phrase
    fonts: tuple[str, ...] = ()  # lettering; empty means FONTS


# fmt: off
SCENES: tuple[Scene, ...] = (
    Scene("business",
          ("a hand-painted wooden shop sign", "a hanging storefront sign", "a vintage enamel shop sign",
           "a striped canvas awning"),
          ("that reads", "with the name", "lettered with"),
          ("above a cobblestone street", "on a narrow brick alley", "in a sleepy seaside village",
           "on a busy downtown corner", "in a snowy mountain town"),
          ("with flower boxes under the window", "with a bicycle leaning against the wall",
           "as shoppers stroll past", "with a cat dozing in the doorway")),
    Scene("neon",
          ("a flickering neon sign", "a pink neon sign", "a buzzing blue neon sign", "a red neon tube sign"),
          ("spelling out", "glowing with the words", "that reads"),
          ("in the window of a late-night diner", "above a rain-soaked alley",
           "on the brick wall of a dim bar", "outside a roadside motel"),
          ("its light reflected in puddles on the pavement", "casting a colored glow over empty booths",
           "with steam rising from a nearby grate"),
          ("in looping neon script", "in bright tube lettering", "in bold glowing capitals")),
    Scene("menu",
          ("a sidewalk chalkboard", "a cafe chalkboard menu", "a slate board propped on an easel",
           "a handwritten menu card"),
          ("with the words", "announcing", "chalked with"),
          ("outside a small cafe", "beside a farmers market stall", "at the entrance of a corner bistro",
           "next to a food truck window"),
          ("decorated with little chalk doodles of leaves", "next to a potted herb plant",
           "with a line of customers nearby"),
          ("in colorful chalk letters", "in loose chalk handwriting", "in neat white chalk capitals")),
    Scene("greeting",
          ("a frosted layer cake", "a chocolate birthday cake", "a tray of cupcakes", "a round sheet cake"),
          ("iced with the words", "piped with the message", "decorated with"),
          ("on a kitchen table", "at a backyard party", "on a bakery counter", "on a picnic blanket"),
          ("surrounded by balloons and confetti", "with lit candles flickering on top",
           "next to a stack of paper plates"),
          ("in swirly pink icing", "in blue frosting script", "in tiny sugar letters")),
    Scene("greeting",
          ("a handmade greeting card", "a long paper banner", "a foil balloon garland"),
          ("that says", "with the words", "spelling"),
          ("taped to a living room wall", "on a cluttered office desk", "in a hospital room",
           "above a decorated doorway"),
          ("surrounded by streamers", "with a small bouquet beside it", "as friends gather around")),
    Scene("slogan",
          ("a plain white T-shirt", "a faded black T-shirt", "a cozy grey hoodie", "a canvas tote bag",
           "a baseball cap"),
          ("printed with the slogan", "with the words", "screen-printed with"),
          ("hanging on a wooden hanger", "folded on a boutique shelf", "worn by a smiling teenager at a street fair",
           "laid flat on a wooden floor"),
          ("with a small graphic underneath", "next to a pair of sneakers", "beside a rack of other shirts")),
    Scene("slogan",
          ("a ceramic coffee mug", "an enamel camping mug", "a tall travel mug"),
          ("printed with", "bearing the words", "decorated with"),
          ("on a sunlit kitchen counter", "on a cluttered desk", "on a campsite picnic table"),
          ("with steam curling upward", "beside an open notebook", "next to a plate of toast")),
    Scene("slogan",
          ("an embroidered throw pillow", "a cross-stitch sampler", "a knitted blanket"),
          ("stitched with", "embroidered with", "bearing the words"),
          ("on a reading nook sofa", "on a porch swing", "in a cozy cabin living room"),
          ("next to a sleeping cat", "beside a steaming mug of tea", "with a ball of yarn nearby"),
          ("in neat cross-stitch letters", "in bright thread", "in looping embroidered script")),
    Scene("slogan",
          ("a vinyl laptop sticker", "a bumper sticker", "a round holographic sticker"),
          ("that reads", "printed with", "with the words"),
          ("on a well-worn laptop lid", "on the back of a dusty pickup truck", "on a skateboard deck",
           "on a dented water bottle"),
          ("surrounded by other peeling stickers", "with its corners starting to curl",
           "next to a faded band logo")),
    Scene("slogan",
          ("a graffiti mural", "a spray-painted brick wall", "a painted concrete underpass"),
          ("spelling out", "that reads", "boldly declaring"),
          ("in a gritty city alley", "beside an abandoned rail yard", "along a skate park",
           "under a highway overpass"),
          ("surrounded by colorful tags", "with paint drips running down the wall",
           "as a cyclist rides by"),
          ("in huge bubble letters", "in sharp wildstyle letters", "in dripping spray-paint letters")),
    Scene("slogan",
          ("a forearm tattoo", "a wrist tattoo", "a shoulder tattoo"),
          ("in flowing script reading", "spelling", "of the words"),
          ("in a bright tattoo studio", "at a crowded summer festival", "on a sunny beach"),
          ("with fine-line flowers around it", "with a small star beside it", "still fresh and slightly red"),
          ("in delicate ink", "in thin black linework", "in old-school lettering")),
    Scene("title",
          ("a hardcover book", "a worn paperback novel", "a leather-bound journal", "a children's picture book"),
          ("titled", "with the title", "whose cover reads"),
          ("lying on a wooden desk", "on a crowded library shelf", "resting on a cafe table beside a latte",
           "on a window seat"),
          ("with a ribbon bookmark peeking out", "its corners softened by years of reading",
           "next to a pair of reading glasses"),
          ("in embossed gold letters", "in elegant serif type", "in whimsical hand-drawn letters",
           "in bold modern type")),
    Scene("title",
          ("a movie poster", "a retro cinema poster", "a theatre playbill", "a vinyl record sleeve"),
          ("for a film called", "with the title", "announcing"),
          ("pasted on a brick wall", "in a glass display case", "in a record shop bin",
           "outside an old cinema"),
          ("with a dramatic illustrated hero", "with torn edges and faded colors",
           "with cast names in small print below")),
    Scene("direction",
          ("a green highway sign", "a weathered road sign", "a wooden mile marker", "a metal signpost"),
          ("pointing the way to", "that reads", "marked"),
          ("beside a desert highway", "at a rural crossroads", "along a coastal road",
           "on a foggy mountain pass"),
          ("with a lone car approaching", "with tumbleweeds caught at its base",
           "as clouds roll over the hills")),
    Scene("direction",
          ("a carved wooden trail marker", "a mossy signpost", "a painted arrow sign nailed to a tree"),
          ("pointing toward", "that reads", "carved with"),
          ("in a dense pine forest", "at a fork in a hiking trail", "beside a mountain stream",
           "at the edge of an alpine meadow"),
          ("with ferns growing around its post", "as hikers pass with backpacks",
           "with fallen leaves scattered around it")),
    Scene("warning",
          ("a yellow caution sign", "a red warning sign", "a metal sign bolted to a fence",
           "a sandwich board sign"),
          ("that reads", "warning", "stating"),
          ("at a construction site", "near the edge of a cliff", "beside a frozen lake",
           "at the entrance of an old mine", "in a busy office lobby"),
          ("with orange cones nearby", "with rust spots on its corners", "as people walk carefully past")),
    Scene("status",
          ("a smartphone screen", "a cracked phone screen", "a smartwatch", "a tablet"),
          ("displaying", "showing the notification", "flashing the message"),
          ("held in a hand on a crowded train", "lying on a bedside table", "on a cafe table",
           "on a runner's wrist in a park"),
          ("with app icons blurred behind it", "with a coffee cup beside it",
           "as rain streaks the window behind")),
    Scene("status",
          ("a laptop screen", "an old CRT monitor", "a desktop computer monitor", "a wall-mounted office display"),
          ("showing the message", "displaying", "with a pop-up reading"),
          ("in a dark home office", "in a busy open-plan office", "in a cluttered server room",
           "in a quiet library corner"),
          ("with sticky notes around its edges", "with a cold cup of coffee nearby",
           "with cables snaking across the desk")),
    Scene("game",
          ("a retro arcade cabinet", "a handheld game console", "a pixel-art game screen"),
          ("flashing", "with its screen showing", "displaying"),
          ("in a dim arcade", "in a teenager's bedroom", "at a crowded gaming convention"),
          ("with colorful buttons worn from use", "with a high-score list glowing underneath"),
          ("in blocky pixel letters", "in glowing 8-bit type", "in bright arcade lettering")),
    Scene("scifi",
          ("a spaceship control panel", "a holographic display", "a submarine console",
           "a futuristic cockpit screen"),
          ("showing the alert", "displaying", "flashing"),
          ("aboard a starship drifting past a nebula", "inside a deep-sea research station",
           "on the bridge of a cargo freighter", "in a sleek orbital station"),
          ("with crew members watching intently", "with warning lights blinking around it",
           "with stars streaking past the window"),
          ("in glowing green text", "in crisp holographic letters", "in amber monospace type")),
    Scene("product",
          ("a cereal box", "a glass jar", "a tin can", "a kraft paper bag", "a glass bottle", "a soda can"),
          ("labeled", "with a label reading", "branded"),
          ("on a grocery store shelf", "on a rustic pantry shelf", "on a kitchen counter",
           "in a picnic basket"),
          ("next to a bowl of fresh fruit", "with condensation beading on it",
           "among other colorful packages")),
    Scene("label",
          ("a cardboard moving box", "a wooden crate", "a mason jar", "a plastic storage bin",
           "a manila folder"),
          ("labeled", "marked", "with a tag reading"),
          ("in a dusty attic", "in a garage workshop", "in a tidy pantry", "in a storage unit"),
          ("stacked with other boxes", "with packing tape peeling at the corners",
           "under a bare hanging bulb"),
          ("in thick black marker", "in neat handwritten letters", "on a strip of masking tape")),
    Scene("note",
          ("a yellow sticky note", "a handwritten note", "a torn notebook page", "a paper napkin"),
          ("that says", "scrawled with", "with the words"),
          ("stuck to a refrigerator door", "on a computer monitor", "on a cafe table",
           "tucked under a windshield wiper"),
          ("with a small doodle of a heart", "with coffee rings beside it", "held by a fruit magnet"),
          ("in hurried blue ink", "in messy pencil handwriting", "in neat cursive")),
    Scene("event",
          ("a long vinyl banner", "a festival banner strung between two poles", "a hand-stitched fabric banner",
           "a colorful paper flyer"),
          ("announcing", "that reads", "promoting"),
          ("over the entrance of a school gym", "above a town square", "on a community noticeboard",
           "across a village main street"),
          ("with bunting fluttering nearby", "as families gather underneath", "with string lights overhead")),
    Scene("event",
          ("a theater marquee", "an old cinema marquee", "a digital billboard"),
          ("advertising", "spelling out", "announcing"),
          ("on a rainy evening street", "in a bustling downtown square", "beside a busy highway"),
          ("with a line of people outside", "framed by flashing bulbs", "with traffic streaking past"),
          ("in black block letters", "in glowing marquee letters", "in bold white type")),
    Scene("home",
          ("a coir doormat", "a rural mailbox", "a painted wooden house sign", "a ceramic door plaque"),
          ("printed with", "painted with", "that reads"),
          ("in front of a red farmhouse door", "at the end of a gravel driveway", "beside a cottage gate",
           "on a city apartment stoop"),
          ("with potted geraniums nearby", "with autumn leaves scattered around",
           "with a pair of muddy boots beside it")),
    Scene("badge",
          ("a name tag", "a plastic name badge", "a lanyard badge", "an embroidered name patch"),
          ("that reads", "printed with", "showing"),
          ("pinned to a blue apron", "clipped to a conference attendee's jacket",
           "sewn onto a mechanic's overalls", "on a chef's white coat"),
          ("in a busy convention hall", "with a smiling face above it", "under bright fluorescent light")),
    Scene("award",
          ("a brass plaque", "a gold trophy", "an engraved medal", "a framed certificate"),
          ("engraved with", "inscribed", "that reads"),
          ("on a trophy shelf", "mounted on an oak-paneled wall", "in a school hallway display case"),
          ("polished to a warm shine", "with a ribbon draped over it", "beside a row of older awards")),
    Scene("cause",
          ("a cardboard placard", "a hand-lettered protest sign", "a campaign yard sign"),
          ("that reads", "with the words", "declaring"),
          ("held high at a crowded rally", "planted on a suburban lawn", "leaning against city hall steps"),
          ("with marchers in the background", "with a dog wearing a bandana nearby",
           "as onlookers take photos"),
          ("in thick painted letters", "in bold marker capitals", "in bright stenciled letters")),
    Scene("boat",
          ("a small fishing boat", "a wooden sailboat", "a bright red tugboat", "a canal houseboat"),
          ("with its name painted on the hull,", "named", "with the stern lettered"),
          ("moored in a quiet harbor", "drifting on a glassy lake", "tied up at a weathered dock"),
          ("with gulls circling overhead", "with nets piled on deck", "its reflection rippling in the water")),
    Scene("stamp",
          ("a manila envelope", "a stack of old letters", "a cardboard parcel", "an official document"),
          ("stamped", "marked with a red stamp reading", "bearing the stamp"),
          ("on a post office counter", "on a detective's desk", "in a cluttered mailroom"),
          ("with a magnifying glass beside it", "next to a pot of ink", "tied with string"),
          ("in smudged red ink", "in bold rubber-stamp letters", "in faded purple ink")),
    Scene("door",
          ("a frosted glass office door", "a polished brass door plate", "a heavy wooden door"),
          ("lettered with", "engraved with", "that reads"),
          ("in a 1940s office building", "at the end of a long hallway", "in a university corridor"),
          ("with a hat rack beside it", "with light spilling from underneath", "with a worn brass handle")),
    Scene("headline",
          ("a newspaper front page", "a folded tabloid", "a magazine cover"),
          ("with the headline", "shouting", "featuring"),
          ("on a park bench", "on a breakfast table", "in a newsstand rack"),
          ("next to a half-eaten croissant", "with a pair of sunglasses resting on it",
           "fluttering in the breeze")),
    Scene("fortune",
          ("a fortune cookie slip", "a paper fortune", "a tarot-style card"),
          ("that reads", "with the message", "printed with"),
          ("on a restaurant table", "in an open palm", "beside a cracked fortune cookie"),
          ("with chopsticks nearby", "next to a cup of jasmine tea", "lit by a paper lantern")),
    Scene("lab",
          ("a glass beaker", "a test tube rack", "a chemistry flask", "a specimen jar"),
          ("labeled", "with a tag reading", "marked"),
          ("on a cluttered laboratory bench", "inside a refrigerated cabinet", "in a high school science lab"),
          ("with a bubbling green liquid inside", "next to a microscope", "under bright white lab lights")),
    Scene("wedding",
          ("a wooden wedding welcome sign", "a chalkboard easel", "a floral arch banner", "a cake topper"),
          ("that reads", "with the words", "spelling"),
          ("at a garden wedding", "in a rustic barn venue", "on a beach at sunset"),
          ("framed by white roses", "with fairy lights draped around it", "as guests find their seats"),
          ("in elegant calligraphy", "in gold script", "in soft painted letters")),
    Scene("jersey",
          ("a soccer jersey", "a basketball jersey", "a hockey sweater"),
          ("with the back printed", "bearing the name and number", "lettered"),
          ("hanging in a locker room", "framed on a sports bar wall", "worn by a player mid-stride"),
          ("with grass stains on the sleeves", "under stadium floodlights", "with the team crest on the chest")),
    Scene("quest",
          ("a weathered treasure map", "an old parchment scroll", "a carved stone tablet"),
          ("marked with the words", "bearing the inscription", "with a note reading"),
          ("spread on a ship captain's table", "half-buried in jungle vines", "in a dusty museum vault"),
          ("with a brass compass resting on it", "with sketches of sea monsters in the margins",
           "lit by a flickering oil lamp"),
          ("in faded ink", "in spidery handwriting", "in ancient carved letters")),
    Scene("slogan",
          ("a motivational wall decal", "a classroom poster", "a framed print"),
          ("stating", "with the words", "that reads"),
          ("in a busy gym", "in a sunny elementary classroom", "above a home office desk"),
          ("surrounded by weights and mats", "with colorful shapes around it", "next to a potted fern")),
    Scene("business",
          ("a food truck", "a bakery box", "a paper coffee cup", "a delivery van"),
          ("with the logo", "printed with", "painted with"),
          ("parked at a street festival", "on an office desk", "on a quiet suburban street"),
          ("with a line of hungry customers", "with steam rising from the window", "in the morning rush")),
    Scene("direction",
          ("a train station sign", "an airport gate sign", "a subway platform sign", "a bus destination display"),
          ("that reads", "showing", "marked"),
          ("in a crowded terminal", "on an empty night platform", "in a sunlit station hall"),
          ("as travelers hurry past with suitcases", "with a clock hanging above it",
           "as a train pulls in")),
    Scene("menu",
          ("a paper price tag", "a farmers market sign", "a handwritten cardboard sign"),
          ("that reads", "with the words", "reading"),
          ("on a crate of produce", "at a roadside fruit stand", "in a busy market hall"),
          ("surrounded by baskets of fresh produce", "with a scale nearby", "in the morning sun"),
          ("in thick marker", "in cheerful hand lettering", "in crayon letters")),
    Scene("note",
          ("words traced in the wet sand", "letters drawn in the frost on a car window",
           "a message written in the dust on a van"),
          ("spelling", "saying", "reading"),
          ("on a quiet beach", "on a cold winter morning", "in a dusty parking lot"),
          ("with footprints leading away", "with the sun rising behind", "with a bird pecking nearby"),
          ("in uneven finger-drawn letters", "in large wobbly letters", "in careful block letters")),
)

# ------------------------------------------------------------------------------------------------ framing

STYLES: tuple[str, ...] = (
    "A realistic photograph of", "A close-up photo of", "A cinematic wide shot of",
    "A detailed illustration of", "A soft-focus photo of", "A high-resolution photo of",
    "A vintage film photo of", "An overhead shot of", "A watercolor painting of", "A 3D render of",
    "A candid snapshot of", "A moody photograph of", "A bright, cheerful photo of",
    "A shallow depth-of-field shot of", "A documentary-style photo of", "A digital painting of",
)

LIGHTS: tuple[str, ...] = (
    "bathed in warm golden light", "lit by soft natural light", "washed in cool blue light",
    "lit by soft diffused light", "glowing with warm ambient light", "lit by dramatic side light",
    "bathed in bright, even light", "lit by gentle afternoon light", "softened by a faint haze",
    "lit by moody low-key light", "lit by colorful reflected light", "bathed in a rosy glow",
    "lit by crisp, cool light", "washed in pale morning light", "lit by warm evening light",
    "rendered in rich, saturated colors", "captured in sharp focus", "framed with a soft vignette",
)

FONTS: tuple[str, ...] = (
    "in bold block letters", "in elegant cursive script", "in hand-painted serif letters",
    "in chunky retro lettering", "in crisp white capitals", "in glittering gold letters",
    "in faded stenciled letters", "in playful bubble letters", "in clean modern type",
    "in tall condensed letters", "in weathered painted letters", "in bright red letters",
)

# Sentence frames. Slots: style, subject, show, text, font, setting, detail, light; "Subject" and "Setting" are
# the same phrases with a capital first letter.
FRAMES: tuple[str, ...] = (
    '{style} {subject} {show} "{text}" {font}, {setting}, {light}.',
    '{Subject} {show} "{text}" {setting}, {detail}, {light}.',
    '{Setting}, {subject} {show} "{text}" {font}, {detail}.',
    '{style} {subject} {show} "{text}", {setting}, {detail}. The scene is {light}.',
    '{Subject} {show} "{text}" {font}, {setting}, {light}.',
    '{style} {subject} {setting}, {show} "{text}" {font}, {detail}.',
)
# fmt: on
